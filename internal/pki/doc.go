// Package pki holds the cluster's public-key infrastructure: the cluster CA,
// node and admin certificates, the TLS configurations used for node-to-node
// and admin gRPC, and the join and admin bearer tokens.
//
// Owner: the cluster-membership maintainers.
//
// All keys are ECDSA P-256 and everything is exchanged as PEM. Only the
// standard library's crypto is used, so the trust model stays small enough
// to read in one sitting:
//
//   - `tandem cluster create` makes a self-signed CA ([NewCA]).
//   - A joining node dials the cluster with [PinnedTLS], authenticating the
//     cluster by the CA fingerprint carried in its [JoinToken], sends a CSR
//     ([NewKey], [NewCSR]) together with the token, and receives a node
//     certificate ([CA.SignNode]).
//   - From then on all node-to-node and admin traffic is mutual TLS
//     ([ServerTLS], [ClientTLS]); servers decide per method what a peer may
//     do using [PeerIdentity]. Admin calls additionally carry a bearer token
//     ([NewAdminToken]).
//
// Invariants:
//   - the cluster stores only verifiers (SHA-256) of join and admin tokens,
//     never the tokens, and compares them in constant time;
//   - every TLS configuration here requires TLS 1.3, and a peer certificate
//     is accepted only if it chains to the cluster CA (PinnedTLS: to a CA
//     with the pinned fingerprint);
//   - the CA, not the requester, decides a certificate's identity: a CSR's
//     subject and SANs are ignored; node certificates carry OU "node", admin
//     certificates OU "admin" and client usage only, so an admin certificate
//     can never serve as a node; export certificates ([CA.SignExport], for
//     the TCP NBD export) OU "export", client usage only, and the volumes
//     they may open as URI SANs "tandem-volume:NAME" ([ExportVolumes]);
//   - [Conns] remembers a server's connection only from Accept until it is
//     closed, with a certificate only once the server's own checks passed,
//     and Recheck closes only connections whose check now fails.
package pki
