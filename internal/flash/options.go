// Package flash is bty's engine: it plans a flash (validates the image,
// the target and the provisioning inputs), writes the decoded image onto
// the target bit-identically while writing only data, syncs, re-reads the
// partition table, verifies, and reports every step as an event. The CLI,
// the TUI, the server and the live env all drive it.
package flash

import (
	"log/slog"

	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fault"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/layout"
	"github.com/btyproject/bty/internal/provision"
	"github.com/btyproject/bty/internal/source"
)

// Options describe one flash. The zero value of every optional field is a
// sane default.
type Options struct {
	// Image is a local path or an http(s) URL.
	Image string
	// Target is the block device path (symlinks allowed).
	Target string

	// Provision is the provisioning mode (fleet.FlashModes); "" means
	// none.
	Provision fleet.Mode
	// UserData and MetaData are cloud-init's seed (--user-data,
	// --meta-data): files the plan reads once, or data the caller holds.
	UserData Input
	MetaData Input
	// VendorData is cloud-init vendor-data for the seed (the live env's
	// phone_home, say): cloud-init merges it below user-data. An image
	// whose seed holds its own vendor-data keeps it, with a note.
	VendorData Input
	// SeedOptional (cloud-init mode) flashes an image without a usable
	// cloud-init (none of its partitions holds /etc/cloud, or cloud-init
	// is disabled in it) with a note instead of failing: no seed is
	// written (provision.Options.SeedOptional). The live env's
	// cijoe-online mode seeds bty-web's SSH key this way, best effort.
	SeedOptional  bool
	Hostname      string
	CijoeWorkflow string
	CijoeConfig   string
	// LogDir receives the cijoe log (default $BTY_LOG_DIR, else
	// /var/log/bty, else the temp dir).
	LogDir string

	// SHA256, when set, is the expected sha256 of the decoded image.
	SHA256 string
	// Verify reads the written ranges back and compares them.
	Verify bool
	// VerifyFull (--verify=full) reads the image's whole range back and
	// checks its sha256 instead: a second full read.
	VerifyFull bool

	// Delta compares the target with the image's chunk store and fetches
	// and writes only the chunks that differ (docs/reference.md, "Delta
	// flashes"). Without a usable store it flashes in full, with a note.
	Delta bool
	// Chunks is where the chunk store is (default: StoreRef(Image)).
	Chunks string

	// Workers is the number of concurrent writers (default 4).
	Workers int
	// Buffered writes through the page cache instead of O_DIRECT (the
	// default, which falls back to buffered when the device refuses it).
	Buffered bool

	// Source tunes URL sources.
	Source source.Options
	Sink   event.Sink
	Logger *slog.Logger
}

// Input is a provisioning input: a file the plan reads once (bounded by
// provision.MaxInputBytes), or bytes the caller already holds (the seed
// the live env fetched from bty-web). Either way it is checked once, in
// the plan, and what was checked is what lands.
type Input struct {
	// Path is the file; with Data, only its name in messages.
	Path string
	// Data, when not nil, is the input itself.
	Data []byte
}

// IsZero reports whether no input was given.
func (in Input) IsZero() bool { return in.Path == "" && in.Data == nil }

// FileInput is the input in the file path ("" for none).
func FileInput(path string) Input { return Input{Path: path} }

// Plan is the outcome of validation: what would be written where, and
// why not if it cannot be. It is the `--dry-run --json` document.
type Plan struct {
	Image        PlanImage  `json:"image"`
	Target       PlanTarget `json:"target"`
	Provisioning fleet.Mode `json:"provisioning"`
	// PartitionTable is the image's own table, read when provisioning
	// is asked for; ProvisionPartition is the partition provisioning
	// would use when that can be told before writing (0: the whole
	// disk).
	PartitionTable     *layout.Table `json:"partition_table,omitempty"`
	ProvisionPartition *int          `json:"provision_partition,omitempty"`
	Notes              []string      `json:"notes"`
	OK                 bool          `json:"ok"`
	Errors             []string      `json:"errors"`

	// kind is the kind of failure the plan is (see fail).
	kind fault.Kind
}

// PlanImage describes the image side of a plan.
type PlanImage struct {
	Ref              string `json:"ref"`
	Format           string `json:"format,omitempty"`
	SizeBytes        int64  `json:"size_bytes"`
	VirtualSizeBytes *int64 `json:"virtual_size_bytes"`
}

// PlanTarget describes the target side of a plan.
type PlanTarget struct {
	Path      string `json:"path"`
	SizeBytes int64  `json:"size_bytes"`
	Model     string `json:"model,omitempty"`
	Serial    string `json:"serial,omitempty"`
	Transport string `json:"transport,omitempty"`
}

// Result describes a finished (or failed) flash.
type Result struct {
	Image  string `json:"image"`
	Target string `json:"target"`
	Format string `json:"format"`
	// TotalBytes is the decoded image size; BytesWritten were sent as
	// data, BytesZeroed were zeroed without sending them.
	TotalBytes   int64      `json:"total_bytes"`
	BytesWritten int64      `json:"bytes_written"`
	BytesZeroed  int64      `json:"bytes_zeroed"`
	ZeroMethod   string     `json:"zero_method,omitempty"`
	SHA256       string     `json:"sha256,omitempty"`
	Verified     bool       `json:"verified"`
	Provisioning fleet.Mode `json:"provisioning"`
	// Provision says what provisioning did (which partition, the seed,
	// the cijoe log's path).
	Provision *provision.Result `json:"provision,omitempty"`
	// Delta says the flash compared the target with the image's chunk
	// store; ChunksTotal and ChunksEqual count the image's chunks and
	// the data chunks (ChunksZero are zero: zeroed, not compared)
	// those the target already held. BytesFetched is what was read from
	// the source (a full flash: the image file's size).
	Delta        bool     `json:"delta"`
	BytesFetched int64    `json:"bytes_fetched"`
	ChunksTotal  int64    `json:"chunks_total"`
	ChunksZero   int64    `json:"chunks_zero"`
	ChunksEqual  int64    `json:"chunks_equal"`
	Elapsed      float64  `json:"elapsed_seconds"`
	Rate         float64  `json:"rate"`
	Notes        []string `json:"notes"`
}
