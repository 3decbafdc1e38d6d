package media

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/exitcode"
)

func sampleFiles(t *testing.T) ([]File, []byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "tool")
	content := bytes.Repeat([]byte("static binary\x00"), 1000)
	content = append(content, "odd"...) // a size that needs padding
	if err := os.WriteFile(src, content, 0o700); err != nil {
		t.Fatal(err)
	}
	return []File{
		{Path: "init", Mode: fs.ModeSymlink | 0o777, Link: "bin/tool"},
		{Path: "bin/tool", Mode: 0o755, Source: src},
		{Path: "etc/bty/live.json", Mode: 0o644, Data: []byte(`{"kind":"test"}` + "\n")},
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "root", Mode: fs.ModeDir | 0o700},
		{Path: "empty", Mode: 0o600},
		{Path: "sbin/modprobe", Mode: fs.ModeSymlink | 0o777, Link: "../bin/tool"},
		{Path: "srcperm", Source: src}, // no perms given: the source's 0700
	}, content
}

func TestWriteInitramfsLayout(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	files, content := sampleFiles(t)
	var buf bytes.Buffer
	if err := WriteInitramfs(&buf, files); err != nil {
		t.Fatal(err)
	}
	es := readInitramfs(t, buf.Bytes())
	type row struct {
		Name string
		Mode uint32
		Ino  uint32
		Data string
	}
	var got []row
	for _, e := range es {
		if e.uid != 0 || e.gid != 0 || e.mtime != 0 {
			t.Errorf("%s: uid %d gid %d mtime %d, want 0 0 0", e.name, e.uid, e.gid, e.mtime)
		}
		d := string(e.data)
		if e.name == "bin/tool" || e.name == "srcperm" {
			if !bytes.Equal(e.data, content) {
				t.Errorf("%s: contents differ from the source", e.name)
			}
			d = "<tool>"
		}
		got = append(got, row{e.name, e.mode, e.ino, d})
	}
	want := []row{
		{"bin", 0o040755, 1, ""},
		{"bin/tool", 0o100755, 2, "<tool>"},
		{"empty", 0o100600, 3, ""},
		{"etc", 0o040755, 4, ""},
		{"etc/bty", 0o040755, 5, ""},
		{"etc/bty/live.json", 0o100644, 6, `{"kind":"test"}` + "\n"},
		{"init", 0o120777, 7, "bin/tool"},
		{"root", 0o040700, 8, ""},
		{"sbin", 0o040755, 9, ""},
		{"sbin/modprobe", 0o120777, 10, "../bin/tool"},
		{"srcperm", 0o100700, 11, "<tool>"},
		{"tmp", 0o041777, 12, ""},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("archive (-want +got):\n%s", d)
	}

	// Same input, same bytes; SOURCE_DATE_EPOCH sets every mtime.
	var again bytes.Buffer
	if err := WriteInitramfs(&again, files); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two runs over the same files gave different bytes")
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	var dated bytes.Buffer
	if err := WriteInitramfs(&dated, files); err != nil {
		t.Fatal(err)
	}
	for _, e := range readInitramfs(t, dated.Bytes()) {
		if e.mtime != 1700000000 {
			t.Errorf("%s: mtime %d with SOURCE_DATE_EPOCH=1700000000", e.name, e.mtime)
		}
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if err := WriteInitramfs(&bytes.Buffer{}, files); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: error %v", err)
	}
}

// TestWriteInitramfsCpioTool unpacks the archive with GNU cpio (and zstd
// -t checks the frame checksums), the reference implementations.
func TestWriteInitramfsCpioTool(t *testing.T) {
	needTools(t, "cpio", "zstd")
	files, content := sampleFiles(t)
	dir := t.TempDir()
	arc := filepath.Join(dir, "initrd")
	f, err := os.Create(arc)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteInitramfs(f, files); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "zstd", "-q", "-t", arc)
	raw := run(t, "zstd", "-q", "-d", "-c", arc)
	if err := os.WriteFile(arc+".cpio", []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	list := run(t, "sh", "-c", "cpio -it --quiet < "+arc+".cpio")
	wantList := "bin\nbin/tool\nempty\netc\netc/bty\netc/bty/live.json\ninit\nroot\nsbin\nsbin/modprobe\nsrcperm\ntmp\n"
	if list != wantList {
		t.Errorf("cpio -t lists:\n%s\nwant:\n%s", list, wantList)
	}
	root := filepath.Join(dir, "root")
	run(t, "sh", "-c", "mkdir "+root+" && cd "+root+" && cpio -idm --quiet --no-absolute-filenames < "+arc+".cpio")
	if b, err := os.ReadFile(filepath.Join(root, "bin/tool")); err != nil || !bytes.Equal(b, content) {
		t.Errorf("bin/tool as cpio extracts it: %v (equal: %v)", err, bytes.Equal(b, content))
	}
	if l, err := os.Readlink(filepath.Join(root, "init")); err != nil || l != "bin/tool" {
		t.Errorf("init -> %q, %v", l, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "init")); err != nil || !bytes.Equal(b, content) {
		t.Errorf("init does not resolve to bin/tool: %v", err)
	}
	st, err := os.Stat(filepath.Join(root, "tmp"))
	if err != nil || st.Mode()&fs.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Errorf("tmp mode = %v, %v; want sticky 0777", st.Mode(), err)
	}
	st, err = os.Stat(filepath.Join(root, "bin/tool"))
	if err != nil || st.Mode().Perm() != 0o755 || st.ModTime().Unix() != 0 {
		t.Errorf("bin/tool: %v %v, %v; want 0755, mtime 0", st.Mode(), st.ModTime(), err)
	}
}

func TestWriteInitramfsRejects(t *testing.T) {
	tests := []struct {
		name  string
		files []File
		want  string
	}{
		{"absolute path", []File{{Path: "/init", Mode: 0o755, Data: []byte("x")}}, "clean relative path"},
		{"dot dot", []File{{Path: "../x", Mode: 0o644, Data: []byte("x")}}, "clean relative path"},
		{"unclean", []File{{Path: "bin//x", Mode: 0o644, Data: []byte("x")}}, "clean relative path"},
		{"twice", []File{{Path: "a", Mode: 0o644}, {Path: "a", Mode: 0o644}}, "given twice"},
		{"dir with data", []File{{Path: "d", Mode: fs.ModeDir | 0o755, Data: []byte("x")}}, "has contents"},
		{"symlink without target", []File{{Path: "l", Mode: fs.ModeSymlink | 0o777}}, "give its target"},
		{"link on a file", []File{{Path: "l", Mode: 0o644, Link: "x"}}, "needs fs.ModeSymlink"},
		{"data and source", []File{{Path: "f", Mode: 0o644, Data: []byte("x"), Source: "/etc/hostname"}}, "one of Data and Source"},
		{"file as a parent", []File{{Path: "bin", Mode: 0o644}, {Path: "bin/x", Mode: 0o644}}, "to be a directory"},
		{"device", []File{{Path: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600}}, "only files, directories and symlinks"},
		{"missing source", []File{{Path: "f", Mode: 0o644, Source: "/nonexistent/file"}}, "adding f to the initramfs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := WriteInitramfs(&bytes.Buffer{}, tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestWriteGPTDisk checks the layout with sgdisk and the copied bytes.
func TestWriteGPTDisk(t *testing.T) {
	needTools(t, "sgdisk")
	dir := t.TempDir()
	// A sparse "filesystem": data at the start and at 3 MiB, holes between.
	img1 := filepath.Join(dir, "p1")
	f, err := os.Create(img1)
	if err != nil {
		t.Fatal(err)
	}
	head := bytes.Repeat([]byte("ESP!"), 1024)
	tail := bytes.Repeat([]byte("tail"), 256)
	f.WriteAt(head, 0)
	f.WriteAt(tail, 3*mib)
	f.Truncate(5 * mib)
	f.Close()
	img2 := filepath.Join(dir, "p2")
	if err := os.WriteFile(img2, []byte("exfat-ish"), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	size := int64(64 * mib)
	bootCode := bytes.Repeat([]byte("boot"), 110) // 440 bytes, all of the MBR's boot code area
	if err := WriteGPTDisk(disk, size, []Partition{
		{Name: "BTY_LIVE", Type: "esp", Size: 5*mib + 1, Image: img1, LegacyBoot: true}, // rounds up to 6 MiB
		{Name: "SCRATCH", Type: "linux", Size: 10 * mib},
		{Name: "BTY_IMAGES", Type: "basicdata", Image: img2},
	}, bootCode); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"legacy BIOS bootable", "", ""} {
		got := run(t, "sgdisk", "-A", fmt.Sprintf("%d:show", i+1), disk)
		if want != "" && !strings.Contains(got, want) || want == "" && strings.Contains(got, "legacy") {
			t.Errorf("partition %d attributes: %q, want %q", i+1, got, want)
		}
	}
	out := run(t, "sgdisk", "-v", disk)
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	want := []gptPart{
		{"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "BTY_LIVE", 1 * mib, 6 * mib},
		{"0FC63DAF-8483-4772-8E79-3D69D8477DE4", "SCRATCH", 7 * mib, 10 * mib},
		// the rest, up to the last MiB (backup GPT)
		{"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "BTY_IMAGES", 17 * mib, 64*mib - 17*mib - 1*mib},
	}
	for i, w := range want {
		if d := cmp.Diff(w, sgdiskPart(t, disk, i+1), cmp.AllowUnexported(gptPart{})); d != "" {
			t.Errorf("partition %d (-want +got):\n%s", i+1, d)
		}
	}
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Errorf("disk is %d bytes, want %d", len(b), size)
	}
	if !bytes.Equal(b[mib:mib+len(head)], head) || !bytes.Equal(b[4*mib:4*mib+len(tail)], tail) {
		t.Error("partition 1's image is not at 1 MiB")
	}
	if string(b[17*mib:17*mib+9]) != "exfat-ish" {
		t.Error("partition 3's image is not at 17 MiB")
	}
	if b[510] != 0x55 || b[511] != 0xaa || b[450] != 0xee {
		t.Error("no protective MBR")
	}
	if !bytes.Equal(b[:440], bootCode) {
		t.Error("the MBR's first 440 bytes are not the boot code")
	}
	// Holes stay holes: far less than 64 MiB allocated.
	st := statBlocks(t, disk)
	if st > 2*mib {
		t.Errorf("the disk image allocates %d bytes: not sparse", st)
	}

	for _, tc := range []struct {
		name  string
		parts []Partition
		want  string
	}{
		{"image too big", []Partition{{Name: "A", Type: "esp", Size: mib, Image: img1}}, "is 5242880 bytes"},
		{"size 0 not last", []Partition{{Name: "A", Type: "esp"}, {Name: "B", Type: "linux", Size: mib}}, "only the last partition"},
		{"too big for the disk", []Partition{{Name: "A", Type: "esp", Size: 63 * mib}}, "do not fit"},
		{"bad type", []Partition{{Name: "A", Type: "ntfs", Size: mib}}, "not one of"},
		{"boot code too big", []Partition{{Name: "A", Type: "esp", Size: mib}}, "at most 440"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "bad.img")
			var code []byte
			if tc.name == "boot code too big" {
				code = make([]byte, 441)
			}
			err := WriteGPTDisk(p, size, tc.parts, code)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
			if _, err := os.Stat(p); err == nil {
				t.Error("a failed WriteGPTDisk left its file")
			}
		})
	}
}

// statBlocks is the bytes allocated to p.
func statBlocks(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestPlaceOut: the finished image never replaces a file that appeared
// meanwhile, unless forced.
func TestPlaceOut(t *testing.T) {
	dir := t.TempDir()
	tmp, out := filepath.Join(dir, "tmp"), filepath.Join(dir, "out.img")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(tmp, "new")
	if err := placeOut(tmp, out, false); err != nil {
		t.Fatalf("placeOut to a free name: %v", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "new" {
		t.Errorf("out = %q", b)
	}
	write(tmp, "newer")
	err := placeOut(tmp, out, false)
	if exitcode.Code(err) != exitcode.Usage || !strings.Contains(err.Error(), "--force") {
		t.Errorf("placeOut over an existing file: %v, want a usage error naming --force", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "new" {
		t.Errorf("the refused placeOut changed out to %q", b)
	}
	if err := placeOut(tmp, out, true); err != nil {
		t.Fatalf("forced placeOut: %v", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "newer" {
		t.Errorf("forced placeOut: out = %q", b)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Error("the temporary file is still there")
	}
	if err := checkOut(out, false); exitcode.Code(err) != exitcode.Usage {
		t.Errorf("checkOut(existing) = %v", err)
	}
	if err := checkOut(out, true); err != nil {
		t.Errorf("checkOut(existing, force) = %v", err)
	}
	if err := checkOut(dir, true); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("checkOut(dir) = %v", err)
	}
}
