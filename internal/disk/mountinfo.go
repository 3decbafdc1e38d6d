package disk

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo (see proc(5)).
type Mount struct {
	ID       int
	ParentID int
	// Major and Minor are the st_dev of files on this filesystem: the
	// block device for ext4/xfs, an anonymous 0:N device for btrfs,
	// overlay, tmpfs and friends.
	Major, Minor uint32
	// Root is the path inside the filesystem that is mounted here (not
	// "/" for bind mounts).
	Root       string
	Mountpoint string
	Options    string
	FSType     string
	// Source is the mount source as the kernel recorded it ("/dev/sda1",
	// "overlay", "tmpfs"); use Major:Minor to identify block devices.
	Source       string
	SuperOptions string
}

// ParseMountinfo parses the format of /proc/PID/mountinfo. Octal escapes
// (\040 for a space, \011, \012, \134) in paths are decoded.
//
// Hand-written: no maintained library parses mountinfo without cgo or
// pulling in a large dependency (moby/sys/mountinfo is close, but it
// filters by callback and we need the whole table anyway).
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if strings.TrimSpace(text) == "" {
			continue
		}
		m, err := parseMountinfoLine(text)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", line, err)
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return mounts, nil
}

func parseMountinfoLine(text string) (Mount, error) {
	// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
	fields := strings.Fields(text)
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if len(fields) < 7 || sep < 0 || len(fields) < sep+3 {
		return Mount{}, fmt.Errorf("malformed line %q", text)
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(fields[0]); err != nil {
		return Mount{}, fmt.Errorf("bad mount ID %q", fields[0])
	}
	if m.ParentID, err = strconv.Atoi(fields[1]); err != nil {
		return Mount{}, fmt.Errorf("bad parent ID %q", fields[1])
	}
	if m.Major, m.Minor, err = parseDevNum(fields[2]); err != nil {
		return Mount{}, err
	}
	m.Root = unescapeOctal(fields[3])
	m.Mountpoint = unescapeOctal(fields[4])
	m.Options = fields[5]
	m.FSType = unescapeOctal(fields[sep+1])
	m.Source = unescapeOctal(fields[sep+2])
	if len(fields) > sep+3 {
		m.SuperOptions = fields[sep+3]
	}
	return m, nil
}

// parseDevNum parses "MAJOR:MINOR" as found in mountinfo and sysfs dev files.
func parseDevNum(s string) (major, minor uint32, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return 0, 0, fmt.Errorf("bad device number %q: want MAJOR:MINOR", s)
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("bad device number %q: want MAJOR:MINOR", s)
	}
	return uint32(ma), uint32(mi), nil
}

// unescapeOctal decodes the \NNN escapes the kernel uses for space, tab,
// newline and backslash in mountinfo and /proc/swaps.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// Swap is one active swap area from /proc/swaps.
type Swap struct {
	Filename string
	// Type is "partition" or "file".
	Type string
}

// ParseSwaps parses the format of /proc/swaps (a header line, then one
// line per swap area).
func ParseSwaps(r io.Reader) ([]Swap, error) {
	var swaps []Swap
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if first {
			first = false
			if len(fields) > 0 && fields[0] == "Filename" {
				continue
			}
		}
		if len(fields) < 2 {
			continue
		}
		swaps = append(swaps, Swap{Filename: unescapeOctal(fields[0]), Type: fields[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading swaps: %w", err)
	}
	return swaps, nil
}
