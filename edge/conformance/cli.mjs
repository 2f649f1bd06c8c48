// Runs the suite's tests with the suite's own runner (as its cli.mjs does) and prints the raw
// results as JSON. Arguments: the suite's directory, and optionally a directory of extra test
// files (each exporting a test group in the suite's format).
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, extraDir] = process.argv.slice(2)
const load = async file => (await import(pathToFileURL(file).href)).default
const { runTests, getResults } = await import(pathToFileURL(path.join(suiteDir, 'client/runner.mjs')).href)
const fetch = await load(path.join(suiteDir, 'node_modules/node-fetch/lib/index.mjs'))
const groups = await load(path.join(suiteDir, 'tests/index.mjs'))
groups.push(await load(path.join(suiteDir, 'tests/surrogate-control.mjs')))
if (extraDir) {
  // An extra group replaces the suite's group of the same id (a newer revision of it).
  for (const file of fs.readdirSync(extraDir).filter(f => f.endsWith('.mjs')).sort()) {
    const group = await load(path.join(extraDir, file))
    const same = groups.findIndex(g => g.id === group.id)
    if (same >= 0) groups.splice(same, 1, group)
    else groups.push(group)
  }
}
await runTests(groups, fetch, false, process.env.npm_config_base)
console.log(JSON.stringify(getResults(), null, 2))
