// Package images keeps the cluster's ISO images (issue 18): installer
// CDs a VM's read-only CD-ROM drive holds. The metadata shard records
// each image (size, SHA-256, the nodes holding a verified copy); the
// bytes are a file on every data node, <data_dir>/images/NAME.iso, so any
// node that may run a VM, and a live migration's source and target at
// once, read the image from their own disk (docs/design.md, "ISO
// images").
//
// Owner: the compute maintainers. internal/daemon wires it: one Manager
// per node over state.State, the metadata client and the peer pool; it
// serves the Image API's upload, list and delete, the peer calls
// ImageRead and ImageFetch, and Local for the VM manager.
//
// Invariants:
//   - an upload stores nothing unless the file is ISO 9660 (the "CD001"
//     signature at byte 0x8001), has the announced size and the SHA-256
//     the client computed; the name is checked free before the first byte
//     is kept, and the file is removed if recording it fails;
//   - a node lists itself as holding an image (image-copy) only after its
//     copy's SHA-256 matched the recorded one; a copy is renamed into
//     place only after it was hashed and synced;
//   - a path Local returns is a copy whose SHA-256 matched the record
//     since the file last changed (size, inode and ctime): hashed again
//     after every tandemd start and every change of the file, and
//     replaced from a peer when it does not match;
//   - deleting an image is refused while a VM's CD-ROM holds it (checked
//     here on fresh metadata and again by the state machine).
package images
