// Package provision tunes the first boot of a freshly flashed disk
// (README, "First-boot tuning"): it parses the disk's partition table in Go,
// reaches partitions through the kernel's nodes or loop devices it
// attaches itself, recognises filesystems by their magic, and either
// seeds cloud-init's NoCloud datasource or runs a cijoe workflow against
// the mounted root. Every mount and loop device is undone on success,
// failure and cancellation.
package provision

import (
	"log/slog"

	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fleet"
)

// SeedDir is where cloud-init's NoCloud datasource looks for a seed, in
// the filesystem that holds /etc/cloud.
const SeedDir = "/var/lib/cloud/seed/nocloud-net"

// Options describe one provisioning run.
type Options struct {
	// Mode is fleet.ModeCloudInit or fleet.ModeCijoe.
	Mode fleet.Mode
	// Target is the whole-disk block device that was just flashed.
	Target string

	// UserData is checked user-data (CheckUserData); MetaData is the
	// user's meta-data file, nil to synthesise one. Hostname, when set,
	// becomes local-hostname; else the image's /etc/hostname is kept.
	UserData []byte
	MetaData []byte
	Hostname string
	// VendorData, when not nil, is checked vendor-data (CheckVendorData)
	// written beside user-data: cloud-init merges it below user-data,
	// so the user's own settings win. An image that ships a seed
	// vendor-data keeps it (Result.ImageVendorData).
	VendorData []byte
	// SeedOptional (cloud-init mode) makes an image without a usable
	// cloud-init (no partition holds /etc/cloud, or cloud-init is
	// disabled in it) a note in Result.Notes instead of an error:
	// nothing is written and Run succeeds. The live env's cijoe-online
	// mode seeds bty-web's SSH key this way, best effort; every other
	// problem is still an error.
	SeedOptional bool

	// Workflow and Config are the cijoe workflow and optional config.
	Workflow string
	Config   string
	// LogDir receives the cijoe log (default $BTY_LOG_DIR, else
	// /var/log/bty, else the temp dir).
	LogDir string

	Sink   event.Sink
	Logger *slog.Logger
}

// Result says what provisioning did.
type Result struct {
	Mode fleet.Mode `json:"mode"`
	// Partition is the partition number used (0: the whole disk).
	Partition  int    `json:"partition"`
	Device     string `json:"device"`
	Filesystem string `json:"filesystem"`
	// Subvolume is the btrfs subvolume holding the root, when not the
	// top level.
	Subvolume  string `json:"subvolume,omitempty"`
	SeedDir    string `json:"seed_dir,omitempty"`
	InstanceID string `json:"instance_id,omitempty"`
	Hostname   string `json:"hostname,omitempty"`
	// DefaultUser is the image's cloud-init default user
	// (system_info.default_user.name in /etc/cloud/cloud.cfg and
	// cloud.cfg.d/*.cfg, the last file setting it wins), who gets
	// vendor-data's ssh_authorized_keys; "" when the image names none
	// or no seed was written.
	DefaultUser string `json:"default_user,omitempty"`
	// ImageVendorData says the image's seed directory already held a
	// vendor-data, which was kept: Options.VendorData was not written.
	ImageVendorData bool `json:"image_vendor_data,omitempty"`
	// LogPath is the cijoe log; CijoeExit cijoe's exit status (nil
	// when it did not run to an exit).
	LogPath   string   `json:"log_path,omitempty"`
	CijoeExit *int     `json:"cijoe_exit,omitempty"`
	Notes     []string `json:"notes"`
}
