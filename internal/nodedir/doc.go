// Package nodedir is the layout of a node's data directory and the files
// in it: the identity (node.json), the sockets (tandemd.sock, nbd.sock),
// the volume list (volumes.json), the Raft directory (raft/), the node's
// TLS material (tls/ca.crt, ca.key, node.crt, node.key), libvirt's copy of
// it (libvirt-pki/, without the CA key), the cluster secret that seals
// secrets in the metadata shard (cluster.secret) and the admin credentials
// for the CLI (admin/).
//
// Owner: the node-lifecycle maintainers. internal/daemon wires it: it
// names every file through a Dir and loads and saves the identity and the
// TLS material with it; internal/volume writes its list with
// WriteFileAtomic.
//
// Invariants:
//   - it is a pure files package: the standard library only, no daemon,
//     no locks (callers serialise what they write), no package state;
//   - every file is written with WriteFileAtomic (temporary file, fsync,
//     rename, directory fsync), so a crash leaves the old or the new
//     content, never a torn file;
//   - private keys, the cluster secret, the identity and the admin
//     credentials are 0600 and the admin directory 0700; certificates are
//     0644;
//   - a node.json that cannot be read as a complete identity is an error
//     naming the file and the way out (restore it or rejoin), never a node
//     that silently starts outside its cluster; a missing one means the
//     node is in no cluster.
package nodedir
