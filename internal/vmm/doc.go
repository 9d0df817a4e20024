// Package vmm is the VM manager: it runs this node's VMs through libvirt
// (define, start, stop, undefine, the console log, live migration as the
// source) and decides for the cluster where VMs go (create with its disks,
// start with placement and N+1 admission, stop, delete, migrate, node
// maintenance with evacuation and failback). Its run loop resumes VMs QEMU
// paused on an I/O error and restarts VMs that stopped on their own.
//
// Owner: the compute maintainers. internal/daemon wires it: it builds one
// Manager from the node's state.State and its volume subsystem (Volumes,
// which *volume.Manager satisfies as is), starts Run, and serves the admin
// VM API, the peer VM calls and node maintenance as thin gRPC adapters
// over the Manager. HA recovery uses Driver, PlanRestart and VMInfoOf.
//
// Invariants:
//   - it holds no *daemon.Daemon and does not import internal/daemon; what
//     it needs of the volume subsystem is the Volumes interface;
//   - a VM runs only where its volumes' primary is (co-location, docs/
//     design.md I5): a start first makes the chosen node primary of every
//     volume, and the node refuses to start a VM unless it serves every
//     volume as primary; the run loop resumes or restarts a VM only then;
//   - a VM's RBD disk is opened by its QEMU (librbd, rbd.go), and only on
//     the node the catalog records as the disk's owner; placement ignores
//     replica location for it; the libvirt secret of a storage exists on a
//     node only while a started VM has a disk on it;
//   - a self-fenced node (state.Fence) starts, resumes and restarts no VM;
//   - decisions are made on fresh metadata (quorum first), so a mutation
//     without quorum changes nothing; the desired state is recorded before
//     a stop, so HA never restarts a VM being stopped;
//   - a VM with a local operation under way (start, stop, migrate) is never
//     restarted behind its back, and a VM that keeps stopping is restarted
//     at most restartLimit times per restartWindow;
//   - a create checks its spec (name, sizes, MACs, existing volumes, what
//     the nodes can run) before it creates any volume, and removes the
//     volumes it created when it fails later;
//   - a CD-ROM drive only ever holds this node's copy of an image that
//     Images.Local verified against its recorded SHA-256 (start, incoming
//     migration, media change);
//   - a UEFI VM's variable store is written from its record before every
//     start and before a migration's target starts it, and only the node
//     running the VM records it (nvram.go);
//   - a VM's cloud-init seed is in its record only sealed (with the cluster
//     secret, bound to its name and UUID); the ISO is built from the record
//     on the node that starts the VM or that a migration moves it to, and
//     removed from a node the VM left (cloudinit.go).
package vmm
