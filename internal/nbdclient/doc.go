// Package nbdclient is a small NBD client (fixed newstyle, simple replies)
// for tests and tools that must know exactly which writes a server
// acknowledged, something fio cannot report once its server dies.
//
// Owner: the test-infrastructure maintainers.
//
// It is written from the protocol, independently of the server in
// blockstore/nbd, so that each checks the other.
//
// Invariant: WriteAt, ReadAt and Flush return nil only when the server
// answered that very request (matched by its handle) with success; a reply
// with a bad magic or an unknown handle ends the connection and fails every
// request still pending, so no write is reported acknowledged that the
// server did not acknowledge.
package nbdclient
