// Command replication benchmarks Tandem's data path: the same fio jobs
// through NBD against qemu-nbd on a local file (the single-copy reference),
// against Tandem volumes with 1, 2 and 3 replicas on a 3-node cluster of
// network namespaces, and directly on a local file (O_DIRECT, libaio) as the
// floor. It writes replication.json and replication.md to -out and prints
// the Markdown.
//
// Owner: the bench maintainers.
//
//	go run ./bench/replication -bin ./bin -out bench/results [-size 1G] [-runtime 10s] [-ramp 2s]
//
// The goals (issue 17) are all for the 2-replica volume, in one run, each
// against a reference measured in that run: the QD1 write+flush p50 within
// 1.25× the replicated floor (unix round trip + backend round trip +
// two-copy pair, replicatedFloor), QD32 IOPS at least 0.70× qemu-nbd's, 1M
// sequential at least 0.80× the two-copy floor's rate per copy, and the CPU
// per QD32 write of the primary's and the secondary's tandemd together
// within 1.5× qemu-nbd's. CPU per write is the processes' utime+stime over
// the measured window (after the ramp, for the runtime) divided by the
// writes completed in it (cpuWindow, cpuPerWrite).
//
// With -profile DIR it writes a CPU profile of the tandemd of every node
// holding the volume's replicas over each Tandem job's measured part
// (-profile-jobs tandem-r2/qd32-write narrows it to goal 4's job).
//
// With -baseline-bin DIR it compares two builds in one invocation: whole
// runs alternate between DIR and -bin (the order flipped every round),
// -rounds times, and the report adds every run's headline figures and
// their medians (baseline.go). -targets and -jobs narrow it to the figures
// in question.
//
// It must run as root (namespaces) and needs fio, qemu-nbd, nbdinfo and
// timeout on PATH.
//
// Invariant: a job's figures count only if it ran with the intended copies:
// one job at a time, every target prefilled once, and the replica states
// read after each job are reported beside its figures (anything other than
// UpToDate/in-sync is visible there).
package main
