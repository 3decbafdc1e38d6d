// Package disk discovers block devices from sysfs and mountinfo (never
// lsblk), decides whether one may be a flash target, and wraps the ioctls
// the engine needs (BLKGETSIZE64, BLKZEROOUT, BLKDISCARD, BLKRRPART).
package disk

// Disk describes one whole block device.
type Disk struct {
	Path      string `json:"path"`
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	// Type is "disk", "loop", "md", "dm", "rom", ...
	Type        string   `json:"type"`
	Transport   string   `json:"transport"`
	Vendor      string   `json:"vendor"`
	Model       string   `json:"model"`
	Serial      string   `json:"serial"`
	Removable   bool     `json:"removable"`
	ReadOnly    bool     `json:"read_only"`
	Mountpoints []string `json:"mountpoints"`
	// Holders are devices stacked on this disk or its partitions (LVM/dm,
	// md, bcache), by kernel name.
	Holders    []string `json:"holders"`
	Partitions []string `json:"partitions"`
	// System is set when the running system or the live media lives on
	// this disk.
	System bool `json:"system"`
	// LogicalBlockSize is the sector size writes must align to.
	LogicalBlockSize int `json:"logical_block_size"`
	// Major and Minor identify the device.
	Major uint32 `json:"-"`
	Minor uint32 `json:"-"`
}
