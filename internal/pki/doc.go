// Package pki holds the cluster's public-key infrastructure: the cluster CA,
// node and admin certificates, the TLS configurations used for node-to-node
// and admin gRPC, and the join and admin bearer tokens.
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
package pki
