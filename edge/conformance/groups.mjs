// The test groups to run: the suite's own (as its published cli.mjs runs them, Surrogate-Control
// included), and the groups in an optional directory of extra test files, each replacing the
// suite's group of the same id (a newer revision of it) or added.
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

export const load = async file => (await import(pathToFileURL(file).href)).default

export async function loadGroups (suiteDir, extraDir) {
  const groups = await load(path.join(suiteDir, 'tests/index.mjs'))
  groups.push(await load(path.join(suiteDir, 'tests/surrogate-control.mjs')))
  if (extraDir) {
    for (const file of fs.readdirSync(extraDir).filter(f => f.endsWith('.mjs')).sort()) {
      const group = await load(path.join(extraDir, file))
      const same = groups.findIndex(g => g.id === group.id)
      if (same >= 0) groups.splice(same, 1, group)
      else groups.push(group)
    }
  }
  return groups
}
