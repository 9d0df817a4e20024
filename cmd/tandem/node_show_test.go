package main

import "testing"

func TestNodeShow(t *testing.T) {
	dir, _, _ := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "node", "show", "node-a")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout,
		`name:\s+node-a\n`, `role:\s+data\n`, `health:\s+online\n`, `leader:\s+yes\n`, `backend:\s+10\.0\.0\.1:7000\n`,
		`VMs:\n\s+\(cannot list VMs: `, // the fake serves no VM service
		`volumes with a replica here:\nNAME\s+ROLE\s+STATE\s+VOLUME-STATE\nvm-disk\s+primary\s+UpToDate\s+ready\n`)

	r = runCLI(t, "", "--data-dir", dir, "node", "show", "node-x")
	r.wantCode(t, 1)
	wantMatch(t, "stderr", r.stderr, `no node named "node-x" \(nodes: node-a, node-b, node-c\)`)
}
