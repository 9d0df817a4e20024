// Package rangelock orders in-flight I/O requests by their byte ranges: the
// one write-ordering primitive of the data path. The local block store uses
// it to serialise read-modify-writes of shared blocks, the replication
// primary to order a request's local I/O after earlier overlapping ones, and
// the secondary to apply a primary's frames in an order that keeps
// overlapping writes in stream order.
//
// Owner: the storage and replication maintainers.
//
// Invariants:
//
//   - A request takes its place at Enqueue, which never blocks: the order of
//     Enqueue calls is the order requests are granted in, as far as they
//     conflict. A caller that numbers its requests (the primary's sequence)
//     enqueues under the same lock that numbers them.
//   - A request is granted once no earlier request still in the lock (held
//     or itself still waiting) conflicts with it. Requests conflict when
//     their ranges overlap, when the later one is AfterAll, or when the
//     earlier one is BeforeAll. Non-conflicting requests never wait for each
//     other; conflicting ones are granted in enqueue order (FIFO).
//   - Waiting never deadlocks: a request only ever waits for earlier ones.
//   - Every enqueued request leaves the lock exactly once: by Release, or by
//     Wait returning an error (it releases the request itself). A request
//     must not be used after it left: its memory is recycled.
package rangelock
