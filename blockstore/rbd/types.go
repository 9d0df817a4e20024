package rbd

// Info is what Stat tells about an image.
type Info struct {
	Name     string
	Size     int64
	Features uint64
	// Watchers are the clients that have the image open.
	Watchers []Watcher
	// LockOwners hold the exclusive lock (at most one).
	LockOwners []Locker
}

// Watcher is one client with the image open.
type Watcher struct {
	Addr   string // entity address, as the blocklist takes it
	ID     int64  // the client's global id (client.ID)
	Cookie uint64
}

// Locker is one holder of the image's exclusive lock.
type Locker struct {
	Client string // "client.4123"
	Cookie string // librbd's lock cookie ("auto 94...")
	Addr   string // entity address, as the blocklist takes it
}

// OpenOptions modify Open.
type OpenOptions struct {
	// Exclusive acquires the image's exclusive lock at open and keeps it:
	// the single writer. Another client's request for the lock is refused
	// (librbd does not hand an explicitly acquired lock over); it must
	// Takeover.
	Exclusive bool
	// ReadOnly opens the image read-only; it takes no lock.
	ReadOnly bool
}
