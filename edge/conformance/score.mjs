// Scores the suite's results the way cache-tests.fyi does (lib/display.mjs): a required or
// optimal test passes only when its result is `true`; setup failures count as not passed.
// Arguments: the suite's directory, the results JSON, and optionally the extra tests' directory.
import fs from 'fs'
import { loadGroups } from './groups.mjs'

const [suiteDir, resultsFile, extraDir] = process.argv.slice(2)
const groups = await loadGroups(suiteDir, extraDir)
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))

const totals = {}
const add = (scope, kind, passed) => {
  const t = (totals[scope] ??= {})
  const k = (t[kind] ??= { passed: 0, total: 0 })
  k.total += 1
  if (passed) k.passed += 1
}
const failures = []
for (const group of groups) {
  for (const test of group.tests) {
    if (test.browser_only) continue
    const kind = test.kind ?? 'required'
    const result = results[test.id]
    const passed = result === true
    add('all groups', kind, passed)
    if (group.id !== 'surrogate-control') add('without surrogate-control', kind, passed)
    add(`group ${group.id}`, kind, passed)
    if (!passed && kind === 'required') {
      const why = result === undefined ? 'not run' : result.join(': ')
      failures.push(`  ${group.id} / ${test.id}: ${why}`)
    }
  }
}
for (const [scope, kinds] of Object.entries(totals)) {
  if (scope.startsWith('group ')) continue
  const line = ['required', 'optimal', 'check']
    .filter(k => kinds[k])
    .map(k => `${k} ${kinds[k].passed}/${kinds[k].total}`)
    .join(', ')
  console.log(`${scope}: ${line}`)
}
console.log('required tests not passed:')
console.log(failures.length ? failures.join('\n') : '  none')
