package live

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/btyproject/bty/internal/disk"
)

// PickTarget chooses the disk auto-flash writes: the one bty.target
// names (a device path, a /dev/disk/by-* link or a serial number), else
// the machine's primary disk, the first non-removable whole disk (in
// kernel name order) that nothing uses. The error lists every disk and
// why it was passed over, for the console and the server's record.
func PickTarget(disks []disk.Disk, want string) (disk.Disk, error) {
	if want != "" {
		resolved := want
		if r, err := filepath.EvalSymlinks(want); err == nil {
			resolved = r
		}
		for _, d := range disks {
			if d.Path == want || d.Path == resolved || "/dev/"+want == d.Path || (d.Serial != "" && d.Serial == want) {
				if p := d.Problems(); len(p) > 0 {
					return disk.Disk{}, fmt.Errorf("bty.target=%s (%s) cannot be flashed: %s", want, d.Path, strings.Join(p, "; "))
				}
				return d, nil
			}
		}
		return disk.Disk{}, fmt.Errorf("bty.target=%s matches no disk (by path or serial); disks: %s", want, describe(disks))
	}
	for _, d := range disks {
		if d.Type != "disk" || d.Removable || len(d.Problems()) > 0 {
			continue
		}
		return d, nil
	}
	return disk.Disk{}, fmt.Errorf("no disk to flash: want a non-removable disk that nothing uses; disks: %s (set bty.target= to choose one by path or serial)", describe(disks))
}

func describe(disks []disk.Disk) string {
	if len(disks) == 0 {
		return "none found (is the storage driver in the live env? see dmesg in the shell)"
	}
	var parts []string
	for _, d := range disks {
		why := d.Problems()
		switch {
		case d.Type != "disk":
			why = append(why, "is a "+d.Type+" device")
		case d.Removable:
			why = append(why, "removable")
		}
		s := d.Path
		if d.Serial != "" {
			s += " serial " + d.Serial
		}
		if len(why) > 0 {
			s += " (" + strings.Join(why, "; ") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
