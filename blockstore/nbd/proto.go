package nbd

// Wire constants from the NBD protocol (doc/proto.md in
// NetworkBlockDevice/nbd). Everything on the wire is big-endian.

const (
	magicNBD         uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt    uint64 = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply    uint64 = 0x0003e889045565a9
	magicRequest     uint32 = 0x25609513
	magicSimpleReply uint32 = 0x67446698
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle  uint16 = 1 << 0
	flagNoZeroes       uint16 = 1 << 1
	flagCFixedNewstyle uint32 = 1 << 0
	flagCNoZeroes      uint32 = 1 << 1
)

// Transmission flags (the ones we send).
const (
	flagHasFlags        uint16 = 1 << 0
	flagReadOnly        uint16 = 1 << 1
	flagSendFlush       uint16 = 1 << 2
	flagSendFUA         uint16 = 1 << 3
	flagSendTrim        uint16 = 1 << 5
	flagSendWriteZeroes uint16 = 1 << 6
	flagCanMultiConn    uint16 = 1 << 8
)

// Option types.
const (
	optExportName      uint32 = 1
	optAbort           uint32 = 2
	optList            uint32 = 3
	optPeekExport      uint32 = 4
	optStartTLS        uint32 = 5
	optInfo            uint32 = 6
	optGo              uint32 = 7
	optStructuredReply uint32 = 8
	optListMetaContext uint32 = 9
	optSetMetaContext  uint32 = 10
	optExtendedHeaders uint32 = 11
)

// Option reply types (the ones we send); errors have bit 31 set.
const (
	repAck         uint32 = 1
	repServer      uint32 = 2
	repInfo        uint32 = 3
	repErrUnsup    uint32 = 1<<31 + 1
	repErrPolicy   uint32 = 1<<31 + 2
	repErrInvalid  uint32 = 1<<31 + 3
	repErrPlatform uint32 = 1<<31 + 4
	repErrTLSReqd  uint32 = 1<<31 + 5
	repErrUnknown  uint32 = 1<<31 + 6
	repErrShutdown uint32 = 1<<31 + 7
	repErrTooBig   uint32 = 1<<31 + 9
)

// Information types for NBD_OPT_INFO and NBD_OPT_GO.
const (
	infoExport      uint16 = 0
	infoName        uint16 = 1
	infoDescription uint16 = 2
	infoBlockSize   uint16 = 3
)

// Command types.
const (
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdCache       uint16 = 5
	cmdWriteZeroes uint16 = 6
	cmdBlockStatus uint16 = 7
)

// Command flags (the ones we accept, and two we refuse).
const (
	cmdFlagFUA      uint16 = 1 << 0
	cmdFlagNoHole   uint16 = 1 << 1
	cmdFlagDF       uint16 = 1 << 2
	cmdFlagFastZero uint16 = 1 << 4
)

// Error values for replies. They are protocol values, not host errnos.
const (
	errPerm     uint32 = 1
	errIO       uint32 = 5
	errInval    uint32 = 22
	errNoSpc    uint32 = 28
	errShutdown uint32 = 108
)

// Sizes and limits.
const (
	requestHeaderLen = 28
	simpleReplyLen   = 16
	optionHeaderLen  = 16
	// maxOptionLen bounds option payloads; the largest legitimate one is an
	// NBD_OPT_GO with a 4 KiB name and a handful of info requests.
	maxOptionLen = 64 << 10
	// maxStringLen is the protocol's limit for names and messages.
	maxStringLen = 4096
	// maxOptions bounds how many options one handshake may send.
	maxOptions = 1024

	defaultMinBlock       = 512
	defaultPreferredBlock = 4096
	defaultMaxBlock       = 32 << 20
	// maxBlockCap bounds Export.MaxBlock: a READ allocates its whole length.
	maxBlockCap = 128 << 20
)
