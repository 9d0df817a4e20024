// Package benchkit holds what every benchmark program under bench/ shares:
// the run's context, its exit code and what it publishes (run.go), writing
// the JSON and Markdown results, the Markdown table writer and cell
// formatting (markdown.go), sample statistics (stats.go), summarising the
// daemons' logs, describing the machine, the tools and the tandemd binary
// under test (sysinfo.go), the data-path benchmarks' fio jobs, runs and
// JSON parsing (fio.go: bench/replication, bench/rbd) and their NBD
// helpers: qemu-nbd as the single-copy reference, servers ended by PID,
// export waits and preallocated files (nbd.go).
//
// Owner: the bench maintainers.
//
// # What a run publishes
//
// Every program's run is Main: the shared flags (Common: -bin, -out,
// -timeout, -render), RunContext, then Finish, which applies one policy:
//
//   - A complete run (no error, context not done) writes <out>/<name>.json
//     and <out>/<name>.md, replacing the committed results, and prints the
//     Markdown. Problems recorded in the report (its errors, failover's
//     integrity problems) are published too, and make the exit code 1.
//   - An interrupted run (SIGINT, SIGTERM, -timeout) or one that stopped on
//     an error (a failed setup, a series its benchmark cannot go on with)
//     never replaces the committed results: its partial report, if it got
//     as far as having one, is marked with "run interrupted: …" or "run
//     failed: …" in its errors and written as <out>/<name>.partial.json and
//     .md beside them (bench/results/.gitignore keeps those out of git).
//     The exit code is 1.
//
// The point is that bench/results only ever holds figures of whole runs,
// while the work of a long run cut short is still there to read.
//
// Render re-renders a report's Markdown from its JSON after a change of the
// layout, without running anything.
//
// # Invariants
//
// Finish writes <out>/<name>.json and .md only for a complete
// run (no error, context not done); any other run's report is marked
// "run interrupted: …" or "run failed: …" and written as <name>.partial.json
// and .md, and the exit code is 1 then, and whenever the report records a
// problem. So the committed results are never replaced by a partial run.
package benchkit
