// Package adminclient connects to a tandemd admin API, either through the
// node's local unix socket or remotely over mTLS, and defines the JSON the
// CLI prints. It is shared by the tandem CLI, the integration tests, the
// demo and the benchmarks, so all of them speak to the daemon, and read its
// answers, the same way.
//
// Owner: the API maintainers.
//
// Invariants:
//   - a call never waits longer than its Options.Timeout;
//   - a remote connection is always mutual TLS with the cluster's CA, and
//     the bearer token is only ever sent over it or the root-only socket;
//   - UnmarshalJSON reads back everything MarshalJSON writes, so a script
//     or test that decodes 'tandem -o json' gets the message that was sent.
package adminclient
