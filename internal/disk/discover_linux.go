package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Roots of the kernel's file systems; tests point them at fixture trees.
var (
	SysRoot  = "/sys"
	ProcRoot = "/proc"
	DevRoot  = "/dev"
)

// List returns the whole block devices on this machine, sorted by name:
// disks, NVMe namespaces, virtio and MMC devices, loop devices that have a
// backing file, and md/dm devices (with their Type). RAM disks (ram*,
// zram*), unbound loop devices and hidden NVMe multipath paths are left
// out.
func List() ([]Disk, error) {
	entries, err := os.ReadDir(filepath.Join(SysRoot, "block"))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w; is sysfs mounted?", filepath.Join(SysRoot, "block"), err)
	}
	s, err := newScan()
	if err != nil {
		return nil, err
	}
	var disks []Disk
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") {
			continue
		}
		dir, err := filepath.EvalSymlinks(filepath.Join(SysRoot, "block", name))
		if err != nil {
			continue // vanished while we looked
		}
		if readSysString(filepath.Join(dir, "hidden")) == "1" {
			continue
		}
		d, err := s.disk(dir)
		if err != nil {
			if !exists(dir) {
				continue // removed while we read it
			}
			return nil, err
		}
		if d.Type == "loop" && (d.SizeBytes == 0 || d.BackingFile == "") {
			continue
		}
		disks = append(disks, d)
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i].Name < disks[j].Name })
	return disks, nil
}

// Get describes the whole block device at path, which may be a symlink
// such as /dev/disk/by-id/... Errors wrap ErrNotExist, ErrNotBlockDevice
// or ErrIsPartition.
func Get(path string) (Disk, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Disk{}, &userError{
				msg: fmt.Sprintf("%s does not exist; `bty list disks` shows the disks present", path),
				err: ErrNotExist,
			}
		}
		return Disk{}, fmt.Errorf("looking at %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 {
		return Disk{}, &userError{
			msg: fmt.Sprintf("%s is not a block device; give a disk such as /dev/sda (see `bty list disks`)", path),
			err: ErrNotBlockDevice,
		}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Disk{}, fmt.Errorf("looking at %s: no device number", path)
	}
	return getDevNum(path, unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
}

// getDevNum is Get after the device node has been resolved to a number;
// tests against fixture trees call it directly.
func getDevNum(path string, major, minor uint32) (Disk, error) {
	link := filepath.Join(SysRoot, "dev", "block", fmt.Sprintf("%d:%d", major, minor))
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return Disk{}, fmt.Errorf("%s (%d:%d) has no entry in %s: %w; is sysfs mounted?", path, major, minor, link, err)
	}
	if isPartitionDir(dir) {
		parent := filepath.Base(filepath.Dir(dir))
		num := readSysString(filepath.Join(dir, "partition"))
		whole := filepath.Join(DevRoot, parent)
		return Disk{}, &userError{
			msg: fmt.Sprintf("%s is partition %s of %s; flash the whole disk %s", path, num, whole, whole),
			err: ErrIsPartition,
		}
	}
	s, err := newScan()
	if err != nil {
		return Disk{}, err
	}
	return s.disk(dir)
}

// Partitions returns the partition nodes the kernel currently has for the
// whole disk name ("sda"), e.g. ["sda1", "sda2"], in partition-number
// order; nil when there are none or the disk is unknown. It reads sysfs
// afresh on every call.
func Partitions(name string) []string {
	dir, err := filepath.EvalSymlinks(filepath.Join(SysRoot, "class", "block", name))
	if err != nil {
		return nil
	}
	return partitionsIn(dir)
}

func partitionsIn(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	type part struct {
		name string
		num  int
	}
	var parts []part
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if !isPartitionDir(p) {
			continue
		}
		n, _ := strconv.Atoi(readSysString(filepath.Join(p, "partition")))
		parts = append(parts, part{e.Name(), n})
	}
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].num != parts[j].num {
			return parts[i].num < parts[j].num
		}
		return parts[i].name < parts[j].name
	})
	var names []string
	for _, p := range parts {
		names = append(names, p.name)
	}
	return names
}

func isPartitionDir(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "partition"))
	return err == nil
}

// scan holds the system-wide state one List or Get judges disks against.
type scan struct {
	mounts []Mount
	swaps  []Swap
	// system maps kernel names of devices under a system mount (or named
	// by BTY_LIVE_DISK) to the reasons.
	system map[string][]string
	// liveSerials are serial numbers named by BTY_LIVE_DISK.
	liveSerials []string
}

func newScan() (*scan, error) {
	mi := filepath.Join(ProcRoot, "self", "mountinfo")
	f, err := os.Open(mi)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w; is /proc mounted?", mi, err)
	}
	mounts, err := ParseMountinfo(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", mi, err)
	}
	s := &scan{mounts: mounts, system: map[string][]string{}}
	if f, err := os.Open(filepath.Join(ProcRoot, "swaps")); err == nil {
		s.swaps, err = ParseSwaps(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	for _, m := range mounts {
		if !isSystemMountpoint(m.Mountpoint) {
			continue
		}
		name, ok := s.mountDevice(m)
		if !ok {
			continue // tmpfs, overlay: nothing on a disk
		}
		reason := fmt.Sprintf("%s is mounted from %s", m.Mountpoint, name)
		for _, n := range s.lower(name) {
			s.system[n] = appendUnique(s.system[n], reason)
		}
	}
	for _, v := range strings.FieldsFunc(os.Getenv(LiveDiskEnv), func(r rune) bool { return r == ',' || r == ' ' }) {
		name, ok := devNameOfPath(v)
		if !ok {
			s.liveSerials = append(s.liveSerials, v)
			continue
		}
		for _, n := range s.lower(name) {
			s.system[n] = appendUnique(s.system[n], LiveDiskEnv+" names "+v)
		}
	}
	return s, nil
}

func isSystemMountpoint(mp string) bool {
	for _, s := range SystemMountpoints {
		if mp == s {
			return true
		}
	}
	return false
}

// mountDevice returns the kernel name of the block device behind m: from
// its major:minor, or for filesystems that report an anonymous device
// (btrfs) from its source path.
func (s *scan) mountDevice(m Mount) (string, bool) {
	if m.Major != 0 {
		if name, ok := devNameOfNum(m.Major, m.Minor); ok {
			return name, true
		}
	}
	if strings.HasPrefix(m.Source, "/") {
		return devNameOfPath(m.Source)
	}
	return "", false
}

// lower returns name and every device below it: the whole disk of a
// partition, the slaves of dm/md devices, and the disk holding a loop
// device's backing file, recursively.
func (s *scan) lower(name string) []string {
	var out []string
	seen := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		out = append(out, n)
		dir, err := filepath.EvalSymlinks(filepath.Join(SysRoot, "class", "block", n))
		if err != nil {
			return
		}
		if isPartitionDir(dir) {
			walk(filepath.Base(filepath.Dir(dir)))
		}
		for _, sl := range dirNames(filepath.Join(dir, "slaves")) {
			walk(sl)
		}
		if bf := backingFile(dir); bf != "" {
			if m, ok := s.mountOf(bf); ok {
				if dn, ok := s.mountDevice(m); ok {
					walk(dn)
				}
			}
		}
	}
	walk(name)
	return out
}

// mountOf returns the mount that contains path (the longest mount point
// that is a path prefix of it; the last one mounted wins ties).
func (s *scan) mountOf(path string) (Mount, bool) {
	var best Mount
	found := false
	for _, m := range s.mounts {
		mp := m.Mountpoint
		if path == mp || mp == "/" || strings.HasPrefix(path, mp+"/") {
			if !found || len(mp) >= len(best.Mountpoint) {
				best, found = m, true
			}
		}
	}
	return best, found
}

// mountpointsOf returns the sorted, distinct mount points of the named
// devices.
func (s *scan) mountpointsOf(names []string) []string {
	want := map[[2]uint32]bool{}
	wantName := map[string]bool{}
	for _, n := range names {
		wantName[n] = true
		if ma, mi, ok := devNumOfName(n); ok {
			want[[2]uint32{ma, mi}] = true
		}
	}
	var mps []string
	for _, m := range s.mounts {
		hit := m.Major != 0 && want[[2]uint32{m.Major, m.Minor}]
		if !hit && m.Major == 0 && strings.HasPrefix(m.Source, "/") {
			if n, ok := devNameOfPath(m.Source); ok && wantName[n] {
				hit = true
			}
		}
		if hit {
			mps = appendUnique(mps, m.Mountpoint)
		}
	}
	sort.Strings(mps)
	return mps
}

func (s *scan) swapsOf(names []string) []string {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []string
	for _, sw := range s.swaps {
		if sw.Type != "partition" {
			continue // a swap file lives on a mounted filesystem, caught as a mount
		}
		if n, ok := devNameOfPath(sw.Filename); ok && want[n] {
			out = appendUnique(out, sw.Filename)
		}
	}
	return out
}

// disk builds the Disk for the sysfs device directory dir.
func (s *scan) disk(dir string) (Disk, error) {
	name := filepath.Base(dir)
	d := Disk{
		Path:        filepath.Join(DevRoot, name),
		Name:        name,
		Mountpoints: []string{},
		Holders:     []string{},
		Partitions:  []string{},
	}
	ma, mi, err := parseDevNum(readSysString(filepath.Join(dir, "dev")))
	if err != nil {
		return Disk{}, fmt.Errorf("reading %s: %w", filepath.Join(dir, "dev"), err)
	}
	d.Major, d.Minor = ma, mi
	sectors, _ := strconv.ParseInt(readSysString(filepath.Join(dir, "size")), 10, 64)
	d.SizeBytes = sectors * 512
	d.LogicalBlockSize, _ = strconv.Atoi(readSysString(filepath.Join(dir, "queue", "logical_block_size")))
	d.Removable = readSysString(filepath.Join(dir, "removable")) == "1"
	d.ReadOnly = readSysString(filepath.Join(dir, "ro")) == "1"
	d.BackingFile = backingFile(dir)
	d.Type = deviceType(dir)
	d.Transport = transport(dir, d.Type)
	dev := filepath.Join(dir, "device")
	d.Vendor = readSysString(filepath.Join(dev, "vendor"))
	d.Model = firstNonEmpty(readSysString(filepath.Join(dev, "model")), readSysString(filepath.Join(dev, "name")))
	d.Serial = serial(dir)
	if parts := partitionsIn(dir); len(parts) > 0 {
		d.Partitions = parts
	}

	own := append([]string{name}, d.Partitions...)
	for _, n := range own {
		for _, h := range dirNames(filepath.Join(SysRoot, "class", "block", n, "holders")) {
			d.Holders = appendUnique(d.Holders, h)
		}
	}
	sort.Strings(d.Holders)
	d.Mountpoints = s.mountpointsOf(own)
	if d.Mountpoints == nil {
		d.Mountpoints = []string{}
	}
	stack := upper(d.Holders)
	d.HolderMountpoints = s.mountpointsOf(stack)
	d.Swaps = s.swapsOf(append(own, stack...))

	for _, n := range own {
		for _, r := range s.system[n] {
			d.SystemReasons = appendUnique(d.SystemReasons, r)
		}
	}
	for _, serial := range s.liveSerials {
		if d.Serial != "" && serial == d.Serial {
			d.SystemReasons = appendUnique(d.SystemReasons, LiveDiskEnv+" names serial "+serial)
		}
	}
	d.System = len(d.SystemReasons) > 0

	if !d.ReadOnly && d.Type != "rom" {
		d.ReadOnly = blkROGet(d.Path)
	}
	return d, nil
}

// upper returns the given holders, their partitions and everything
// stacked on them, recursively.
func upper(holders []string) []string {
	var out []string
	seen := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		out = append(out, n)
		dir, err := filepath.EvalSymlinks(filepath.Join(SysRoot, "class", "block", n))
		if err != nil {
			return
		}
		for _, p := range partitionsIn(dir) {
			walk(p)
		}
		for _, h := range dirNames(filepath.Join(dir, "holders")) {
			walk(h)
		}
	}
	for _, h := range holders {
		walk(h)
	}
	return out
}

// blkROGet asks the kernel with BLKROGET whether the device node is
// read-only; this also catches `blockdev --setro`, which sysfs does not
// show. Failing to open (not root, no node) counts as writable here:
// OpenTarget reports the real error.
func blkROGet(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	ro, err := unix.IoctlGetInt(fd, unix.BLKROGET)
	return err == nil && ro != 0
}

func deviceType(dir string) string {
	name := filepath.Base(dir)
	switch {
	case strings.HasPrefix(name, "loop"):
		return "loop"
	case exists(filepath.Join(dir, "dm")):
		return "dm"
	case exists(filepath.Join(dir, "md")):
		return "md"
	case strings.HasPrefix(name, "sr") || readSysString(filepath.Join(dir, "device", "type")) == "5":
		return "rom"
	}
	return "disk"
}

// transport derives the bus from where the device sits in the sysfs
// device tree, as lsblk does (Transport), loop devices being "loop".
func transport(dir, typ string) string {
	switch typ {
	case "loop":
		return "loop"
	case "dm", "md":
		return ""
	}
	return Transport(filepath.Base(dir), dir)
}

// serial finds the serial number the way udev would: the block device's
// own serial (virtio), the device's (NVMe controller, MMC), SCSI VPD page
// 0x80, the USB device's, then a WWID.
func serial(dir string) string {
	dev := filepath.Join(dir, "device")
	for _, f := range []string{filepath.Join(dir, "serial"), filepath.Join(dev, "serial")} {
		if v := readSysString(f); v != "" {
			return v
		}
	}
	if v := vpdSerial(filepath.Join(dev, "vpd_pg80")); v != "" {
		return v
	}
	if devDir, err := filepath.EvalSymlinks(dev); err == nil && strings.Contains(filepath.ToSlash(devDir), "/usb") {
		for p := devDir; len(p) > len(SysRoot); p = filepath.Dir(p) {
			if exists(filepath.Join(p, "idVendor")) {
				if v := readSysString(filepath.Join(p, "serial")); v != "" {
					return v
				}
				break
			}
		}
	}
	for _, f := range []string{filepath.Join(dir, "wwid"), filepath.Join(dev, "wwid")} {
		if v := readSysString(f); v != "" {
			return v
		}
	}
	return ""
}

// vpdSerial decodes the Unit Serial Number VPD page (0x80): a 4-byte
// header whose last byte is the length, then ASCII. Anything that is not
// plain printable text is ignored.
func vpdSerial(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[2])<<8 | int(b[3])
	if 4+n > len(b) {
		return ""
	}
	v := b[4 : 4+n]
	for _, c := range v {
		if c < 0x20 || c > 0x7e {
			return ""
		}
	}
	return strings.TrimSpace(string(v))
}

func backingFile(dir string) string {
	return strings.TrimSuffix(readSysString(filepath.Join(dir, "loop", "backing_file")), " (deleted)")
}

// devNameOfNum maps a device number to its kernel name through
// /sys/dev/block.
func devNameOfNum(major, minor uint32) (string, bool) {
	dir, err := filepath.EvalSymlinks(filepath.Join(SysRoot, "dev", "block", fmt.Sprintf("%d:%d", major, minor)))
	if err != nil {
		return "", false
	}
	return filepath.Base(dir), true
}

func devNumOfName(name string) (uint32, uint32, bool) {
	ma, mi, err := parseDevNum(readSysString(filepath.Join(SysRoot, "class", "block", name, "dev")))
	return ma, mi, err == nil
}

// devNameOfPath maps a device path as the kernel prints it ("/dev/sda2",
// "/dev/dm-1") or any other path to a block device node (a by-id symlink,
// /dev/mapper/vg-root) to the device's kernel name.
func devNameOfPath(path string) (string, bool) {
	if rest, ok := strings.CutPrefix(path, "/dev/"); ok && !strings.Contains(rest, "/") {
		if _, _, ok := devNumOfName(rest); ok {
			return rest, true
		}
	}
	if !strings.HasPrefix(path, "/") {
		return "", false
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", false
	}
	return devNameOfNum(unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
}

func readSysString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func dirNames(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func appendUnique(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}
