// Package sealed keeps secrets that the cluster must replicate (BMC
// passwords, Ceph keys, VMs' cloud-init seeds) out of the Raft log and
// snapshots in plain text: a value is sealed with AES-256-GCM under a key
// derived from the cluster secret (32 random bytes made at cluster create,
// kept only in members' data directories, mode 0600) before it is
// proposed, and opened in memory only where it is used.
//
// Owner: the security maintainers. internal/recovery seals BMC passwords
// in 'tandem node fence-config' and opens them when it fences;
// internal/vmm seals a VM's cloud-init seed at 'tandem vm create' and
// opens it on the node that starts the VM; internal/membership makes the cluster secret (NewSecret) at create and
// hands it to joining nodes; internal/nodedir stores it.
//
// Invariants:
//   - it is the standard library only (crypto/aes, crypto/cipher,
//     crypto/hkdf), with no package state;
//   - a key is derived per purpose (HKDF-SHA256, the purpose as info), so
//     a blob sealed for one purpose never opens under another;
//   - every blob is bound by its associated data to where it is stored
//     (for a BMC password: the node and the field), so a blob copied to
//     another record, a tampered blob or a blob sealed under another
//     cluster secret fails to open; Open never returns a partial value;
//   - a fresh random 96-bit nonce per Seal; blobs are text
//     ("tdms1." + base64url(nonce ‖ ciphertext ‖ tag)), safe in JSON;
//   - errors never contain the plaintext or the secret.
package sealed
