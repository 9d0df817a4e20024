// Package cephholders finds the processes of this host that may still
// hold a Ceph client, so that a node can prove that a client Tandem
// blocklisted is gone before its blocklist entry is removed (issue 15,
// docs/design.md §3.6).
//
// Owner: the storage maintainers.
//
// Invariant: a process absent from a Scan taken at time T cannot hold a
// Ceph client that existed before T, and a process that Alive reports
// gone never comes back (a PID reused later has another start time).
//
// Why this is enough: a Ceph client's address is the IP of its network
// namespace plus a random nonce, and nothing outside the client links the
// nonce to a process (not the watchers, not the monitors' sessions, not a
// librbd admin socket). What can be known is which processes could be
// such a client: those of the same network namespace (so the same IP)
// that have librados or librbd mapped. A client lives inside its process;
// a new process gets a new nonce. So once every process of a scan taken
// after the entry was recorded has exited, every client the entry can
// name is gone. The caller excludes itself (it knows its own clients
// exactly) and processes it knows hold none of the entries (the QEMU of a
// VM whose disks were never fenced).
//
// A process whose namespace link cannot be read (some sandboxes hide
// their init's even from root) is told apart by the network interfaces it
// sees (/proc/PID/net/dev); if those cannot be read either, it is listed.
//
// Caveat: a client built without the shared libraries (statically linked)
// is not seen; Debian's Ceph clients, QEMU and fio link them dynamically.
//
// The scan reads /proc with the standard library only: no package of the
// field does this narrow job (gopsutil lists processes but neither
// namespaces nor mappings in one pass).
package cephholders
