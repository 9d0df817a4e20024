// Package statetest is the test support the subsystems built on
// internal/state share: a test State (NewState, Quorum), a journal the
// fakes of one test write their calls to, and a check of a gRPC status
// error (IsStatus). Only tests import it.
//
// Owner: the daemon maintainers, with internal/state.
//
// Invariants:
//   - it is used by _test.go files only, never by a package the daemon
//     runs;
//   - it holds no fake of a subsystem's own interfaces: each package's
//     fakes stay in its fakes_test.go, built on these pieces;
//   - a helper here asserts no more and no less than the copies it
//     replaced, so moving a test onto it never weakens the test.
package statetest
