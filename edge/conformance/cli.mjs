// Runs the suite's tests with the suite's own runner (as its cli.mjs does) and prints the raw
// results as JSON. Arguments: the suite's directory, and optionally a directory of extra test
// groups (see groups.mjs).
import path from 'path'
import { pathToFileURL } from 'url'
import { load, loadGroups } from './groups.mjs'

const [suiteDir, extraDir] = process.argv.slice(2)
const { runTests, getResults } = await import(pathToFileURL(path.join(suiteDir, 'client/runner.mjs')).href)
const fetch = await load(path.join(suiteDir, 'node_modules/node-fetch/lib/index.mjs'))
await runTests(await loadGroups(suiteDir, extraDir), fetch, false, process.env.npm_config_base)
console.log(JSON.stringify(getResults(), null, 2))
