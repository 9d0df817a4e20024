// Package tandemv1 is the Go code generated from
// proto/tandem/v1/tandem.proto by protoc-gen-go and protoc-gen-go-grpc
// (`make proto`): the messages, clients and servers of Tandem's admin API
// (the Cluster, Node, Volume, VM and HA services, served on the admin
// address and on the node's local unix socket) and of its peer API (the
// Peer service, node to node on the backend address).
//
// Owner: the API maintainers.
//
// Invariant: every file here but this one is generated and never edited by
// hand: an API change is made in the .proto and regenerated, and `make
// proto-check` fails when the committed code differs from what the .proto
// generates.
package tandemv1
