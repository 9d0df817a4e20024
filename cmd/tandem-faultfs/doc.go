// Command tandem-faultfs serves a fault-injecting FUSE filesystem
// (internal/faultfs) in a process of its own, for tests and tools that
// run tandemd elsewhere and need to inject disk faults from outside: a
// passthrough of a backing directory, driven over a unix control socket.
// It is test tooling, never shipped in the package.
//
//	tandem-faultfs serve -backing DIR -mount DIR -control SOCK
//	tandem-faultfs -control SOCK set -ops write|sync [-path volumes] [-err EIO] [-delay 200ms] [-times N]
//	tandem-faultfs -control SOCK clear|faults|powerloss|sync|counters|unmount
//
// serve mounts, prints "ready" once the mount and the socket are up, and
// runs until SIGINT/SIGTERM or an unmount request; it then unmounts (a
// clean shutdown writes unsynced data back; send powerloss first to lose
// it). It needs root.
//
// Owner: the test-infrastructure maintainers.
//
// Invariant: serve leaves no mount behind when it returns: it unmounts on
// every way out it controls (signal, unmount request, control socket
// failure), lazily if the mount is busy.
package main
