package disk

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fakeDevRoot is where fixture tests say device nodes live: nothing is
// there, so no test ever opens a device of the machine running it.
const fakeDevRoot = "/bty-fixture/dev"

// fixtureBase holds the fake /sys trees, built once per test binary
// (the file system here is slow enough that rebuilding per test costs
// seconds).
var (
	fixtureBase string
	fixtureSys  = map[string]string{}
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if fixtureBase != "" {
		os.RemoveAll(fixtureBase)
	}
	os.Exit(code)
}

// useMachine points SysRoot, ProcRoot and DevRoot at the fixture machine
// testdata/NAME: its sys.txt is built into a fake /sys (sysfs is full of
// symlinks and colons, which do not belong in a Go module's files), its
// proc/ directory is used as is.
func useMachine(t *testing.T, name string) {
	t.Helper()
	sys, ok := fixtureSys[name]
	if !ok {
		if fixtureBase == "" {
			var err error
			if fixtureBase, err = os.MkdirTemp("", "bty-disk-fixture-"); err != nil {
				t.Fatal(err)
			}
		}
		sys = filepath.Join(fixtureBase, name, "sys")
		if err := buildSys(sys, filepath.Join("testdata", name, "sys.txt")); err != nil {
			t.Fatal(err)
		}
		fixtureSys[name] = sys
	}
	oldSys, oldProc, oldDev := SysRoot, ProcRoot, DevRoot
	SysRoot, ProcRoot, DevRoot = sys, filepath.Join("testdata", name, "proc"), fakeDevRoot
	t.Cleanup(func() { SysRoot, ProcRoot, DevRoot = oldSys, oldProc, oldDev })
}

// buildSys materializes a sys.txt description (format in
// testdata/ws/sys.txt) at root.
func buildSys(root, descPath string) (err error) {
	f, err := os.Open(descPath)
	if err != nil {
		return err
	}
	defer f.Close()
	// The helpers below panic with a fixtureError; turn it back into an
	// error here.
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(fixtureError)
			if !ok {
				panic(r)
			}
			err = fe.err
		}
	}()
	lineNo := 0
	fail := func(format string, args ...any) {
		panic(fixtureError{fmt.Errorf("%s:%d: %s", descPath, lineNo, fmt.Sprintf(format, args...))})
	}
	check := func(err error) {
		if err != nil {
			fail("%v", err)
		}
	}
	dirs := map[string]string{} // kernel name -> device dir, relative to root
	expand := func(p string) string {
		if rest, ok := strings.CutPrefix(p, "@"); ok {
			name, sub, _ := strings.Cut(rest, "/")
			d, ok := dirs[name]
			if !ok {
				fail("@%s used before it is defined", name)
			}
			return filepath.Join(d, sub)
		}
		return p
	}
	write := func(rel, content string) {
		p := filepath.Join(root, rel)
		check(os.MkdirAll(filepath.Dir(p), 0o755))
		check(os.WriteFile(p, []byte(content), 0o644))
	}
	link := func(rel, target string) {
		p := filepath.Join(root, rel)
		check(os.MkdirAll(filepath.Dir(p), 0o755))
		tgt := filepath.Join(root, target)
		check(os.MkdirAll(tgt, 0o755))
		r, err := filepath.Rel(filepath.Dir(p), tgt)
		check(err)
		os.Remove(p)
		check(os.Symlink(r, p))
	}
	device := func(name, devnum, dir string) {
		dirs[name] = dir
		write(filepath.Join(dir, "dev"), devnum+"\n")
		for _, sub := range []string{"holders", "slaves"} {
			check(os.MkdirAll(filepath.Join(root, dir, sub), 0o755))
		}
		link(filepath.Join("class", "block", name), dir)
		link(filepath.Join("dev", "block", devnum), dir)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		verb, rest, _ := strings.Cut(line, " ")
		args := strings.Fields(rest)
		switch verb {
		case "disk": // NAME MAJ:MIN DIR
			name, devnum, dir := args[0], args[1], args[2]
			device(name, devnum, dir)
			write(filepath.Join(dir, "ro"), "0\n")
			write(filepath.Join(dir, "removable"), "0\n")
			write(filepath.Join(dir, "queue", "logical_block_size"), "512\n")
			link(filepath.Join("block", name), dir)
		case "part": // NAME MAJ:MIN DISK NUMBER
			name, devnum, parent, num := args[0], args[1], args[2], args[3]
			device(name, devnum, filepath.Join(expand("@"+parent), name))
			write(filepath.Join(dirs[name], "partition"), num+"\n")
			write(filepath.Join(dirs[name], "ro"), "0\n")
		case "hold": // HOLDER LOWER
			h, l := args[0], args[1]
			link(filepath.Join(expand("@"+l), "holders", h), expand("@"+h))
			link(filepath.Join(expand("@"+h), "slaves", l), expand("@"+l))
		case "file": // PATH CONTENT
			p, content, _ := strings.Cut(rest, " ")
			if strings.HasPrefix(content, `"`) {
				u, err := strconv.Unquote(content)
				check(err)
				content = u
			} else {
				content += "\n"
			}
			write(expand(p), content)
		case "link": // PATH TARGET
			link(expand(args[0]), expand(args[1]))
		default:
			fail("unknown line %q", line)
		}
	}
	return sc.Err()
}

type fixtureError struct{ err error }

// TestListGolden pins the whole `bty list disks --json` shape of each
// fixture machine. Run with -update after a deliberate change.
func TestListGolden(t *testing.T) {
	for _, machine := range []string{"ws", "live"} {
		t.Run(machine, func(t *testing.T) {
			t.Setenv(LiveDiskEnv, "")
			useMachine(t, machine)
			disks, err := List()
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(disks, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", machine+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("List() differs from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

func TestListNames(t *testing.T) {
	tests := []struct {
		machine string
		want    []string
	}{
		// no loop1 (unbound, size 0), zram0, ram0
		{"ws", []string{"dm-0", "dm-1", "loop0", "nvme0n1", "sda", "sdb", "sdc"}},
		// no nvme0c0n1 (hidden multipath node)
		{"live", []string{"loop0", "loop1", "md0", "mmcblk0", "nvme0n1", "sda", "vda", "vdb", "vdc"}},
	}
	for _, tt := range tests {
		t.Run(tt.machine, func(t *testing.T) {
			useMachine(t, tt.machine)
			disks, err := List()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range disks {
				got = append(got, d.Name)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("List() names (-want +got):\n%s", diff)
			}
		})
	}
}

// summary is the part of a Disk the table below states by hand.
type summary struct {
	Type, Transport, Vendor, Model, Serial string
	SizeBytes                              int64
	LogicalBlockSize                       int
	Removable, ReadOnly, System            bool
	Mountpoints, Holders, Partitions       []string
	Problems                               []string
}

func summarize(d Disk) summary {
	return summary{
		Type: d.Type, Transport: d.Transport, Vendor: d.Vendor, Model: d.Model, Serial: d.Serial,
		SizeBytes: d.SizeBytes, LogicalBlockSize: d.LogicalBlockSize,
		Removable: d.Removable, ReadOnly: d.ReadOnly, System: d.System,
		Mountpoints: d.Mountpoints, Holders: d.Holders, Partitions: d.Partitions,
		Problems: d.Problems(),
	}
}

func TestFixtureDisks(t *testing.T) {
	none := []string{}
	tests := []struct {
		name    string
		machine string
		env     string // BTY_LIVE_DISK
		disk    string
		want    summary
	}{
		{
			name: "nvme system disk with partitions and an LVM root", machine: "ws", disk: "nvme0n1",
			want: summary{
				Type: "disk", Transport: "nvme", Model: "Samsung SSD 970 EVO Plus 500GB", Serial: "S4EVNX0R123456",
				SizeBytes: 1000215216 * 512, LogicalBlockSize: 512, System: true,
				Mountpoints: []string{"/boot/efi"}, Holders: []string{"dm-0"}, Partitions: []string{"nvme0n1p1", "nvme0n1p2"},
				Problems: []string{
					"mounted at /boot/efi, /; unmount first",
					"held by dm-0 (LVM or device-mapper); deactivate it first",
					"the running system or the live media is on this disk (/ is mounted from dm-0; /boot/efi is mounted from nvme0n1p1); pick another disk",
				},
			},
		},
		{
			name: "dm root volume is itself the system", machine: "ws", disk: "dm-0",
			want: summary{
				Type: "dm", SizeBytes: 999161856 * 512, LogicalBlockSize: 512, System: true,
				Mountpoints: []string{"/"}, Holders: none, Partitions: none,
				Problems: []string{
					"mounted at /; unmount first",
					"the running system or the live media is on this disk (/ is mounted from dm-0); pick another disk",
				},
			},
		},
		{
			name: "sata disk with a mounted partition (escaped path, bind mount) and swap", machine: "ws", disk: "sda",
			want: summary{
				Type: "disk", Transport: "sata", Vendor: "ATA", Model: "WDC WD20EZRZ-00Z", Serial: "WD-WCC4M1234567",
				SizeBytes: 3907029168 * 512, LogicalBlockSize: 512,
				Mountpoints: []string{"/mnt/my data", "/srv/photos"}, Holders: none, Partitions: []string{"sda1", "sda2"},
				Problems: []string{
					"mounted at /mnt/my data, /srv/photos; unmount first",
					"in use as swap (/dev/sda2); run swapoff /dev/sda2 first",
				},
			},
		},
		{
			name: "usb stick", machine: "ws", disk: "sdb",
			want: summary{
				Type: "disk", Transport: "usb", Vendor: "SanDisk", Model: "Cruzer Blade", Serial: "4C530001231120115142",
				SizeBytes: 60063744 * 512, LogicalBlockSize: 512, Removable: true,
				Mountpoints: none, Holders: none, Partitions: []string{"sdb1"},
			},
		},
		{
			name: "disk held by dm-crypt", machine: "ws", disk: "sdc",
			want: summary{
				Type: "disk", Transport: "sata", Vendor: "ATA", Model: "ST1000DM010-2EP1",
				SizeBytes: 1953525168 * 512, LogicalBlockSize: 512,
				Mountpoints: none, Holders: []string{"dm-1"}, Partitions: none,
				Problems: []string{"held by dm-1 (LVM or device-mapper); deactivate it first"},
			},
		},
		{
			name: "loop device with a backing file", machine: "ws", disk: "loop0",
			want: summary{
				Type: "loop", Transport: "loop", SizeBytes: 2097152 * 512, LogicalBlockSize: 512,
				Mountpoints: none, Holders: none, Partitions: none,
			},
		},
		{
			name: "live usb stick: medium and image store, through a loop backing file", machine: "live", disk: "sda",
			want: summary{
				Type: "disk", Transport: "usb", Vendor: "Kingston", Model: "DataTraveler 3.0", Serial: "E0D55EA573F0F4A0A9470BB2",
				SizeBytes: 30031872 * 512, LogicalBlockSize: 512, Removable: true, System: true,
				Mountpoints: []string{"/mnt/BTY_IMAGES", "/run/live/medium"}, Holders: none, Partitions: []string{"sda1", "sda2"},
				Problems: []string{
					"mounted at /mnt/BTY_IMAGES, /run/live/medium; unmount first",
					"the running system or the live media is on this disk (/run/live/medium is mounted from sda1; /var/lib/bty/images is mounted from loop1); pick another disk",
				},
			},
		},
		{
			name: "live squashfs loop: read-only and mounted", machine: "live", disk: "loop0",
			want: summary{
				Type: "loop", Transport: "loop", SizeBytes: 1638400 * 512, LogicalBlockSize: 512, ReadOnly: true,
				Mountpoints: []string{"/run/live/rootfs/filesystem.squashfs"}, Holders: none, Partitions: none,
				Problems: []string{
					"mounted at /run/live/rootfs/filesystem.squashfs; unmount first",
					"read-only; clear the write-protect switch or run blockdev --setrw " + fakeDevRoot + "/loop0, or pick another disk",
				},
			},
		},
		{
			name: "image store loop", machine: "live", disk: "loop1",
			want: summary{
				Type: "loop", Transport: "loop", SizeBytes: 20971520 * 512, LogicalBlockSize: 512, System: true,
				Mountpoints: []string{"/var/lib/bty/images"}, Holders: none, Partitions: none,
				Problems: []string{
					"mounted at /var/lib/bty/images; unmount first",
					"the running system or the live media is on this disk (/var/lib/bty/images is mounted from loop1); pick another disk",
				},
			},
		},
		{
			name: "clean nvme target with 4K sectors", machine: "live", disk: "nvme0n1",
			want: summary{
				Type: "disk", Transport: "nvme", Model: "WD_BLACK SN770 1TB", Serial: "22047A801234",
				SizeBytes: 1953525168 * 512, LogicalBlockSize: 4096,
				Mountpoints: none, Holders: none, Partitions: none,
			},
		},
		{
			name: "BTY_LIVE_DISK by path", machine: "live", env: "/dev/nvme0n1", disk: "nvme0n1",
			want: summary{
				Type: "disk", Transport: "nvme", Model: "WD_BLACK SN770 1TB", Serial: "22047A801234",
				SizeBytes: 1953525168 * 512, LogicalBlockSize: 4096, System: true,
				Mountpoints: none, Holders: none, Partitions: none,
				Problems: []string{"the running system or the live media is on this disk (BTY_LIVE_DISK names /dev/nvme0n1); pick another disk"},
			},
		},
		{
			name: "mmc card", machine: "live", disk: "mmcblk0",
			want: summary{
				Type: "disk", Transport: "mmc", Model: "SC64G", Serial: "0x1234abcd",
				SizeBytes: 62333952 * 512, LogicalBlockSize: 512,
				Mountpoints: none, Holders: none, Partitions: none,
			},
		},
		{
			name: "BTY_LIVE_DISK by serial", machine: "live", env: "0x1234abcd", disk: "mmcblk0",
			want: summary{
				Type: "disk", Transport: "mmc", Model: "SC64G", Serial: "0x1234abcd",
				SizeBytes: 62333952 * 512, LogicalBlockSize: 512, System: true,
				Mountpoints: none, Holders: none, Partitions: none,
				Problems: []string{"the running system or the live media is on this disk (BTY_LIVE_DISK names serial 0x1234abcd); pick another disk"},
			},
		},
		{
			name: "virtio disk", machine: "live", disk: "vda",
			want: summary{
				Type: "disk", Transport: "virtio", Vendor: "0x1af4", Serial: "bty-target-1",
				SizeBytes: 41943040 * 512, LogicalBlockSize: 512,
				Mountpoints: none, Holders: none, Partitions: none,
			},
		},
		{
			name: "raid member whose array's partition is mounted", machine: "live", disk: "vdb",
			want: summary{
				Type: "disk", Transport: "virtio", Vendor: "0x1af4",
				SizeBytes: 41943040 * 512, LogicalBlockSize: 512,
				Mountpoints: none, Holders: []string{"md0"}, Partitions: []string{"vdb1"},
				Problems: []string{
					"mounted at /mnt/raid; unmount first",
					"held by md0 (software RAID); stop it first",
				},
			},
		},
		{
			name: "md array", machine: "live", disk: "md0",
			want: summary{
				Type: "md", SizeBytes: 41805824 * 512, LogicalBlockSize: 512,
				Mountpoints: []string{"/mnt/raid"}, Holders: none, Partitions: []string{"md0p1"},
				Problems: []string{"mounted at /mnt/raid; unmount first"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(LiveDiskEnv, tt.env)
			useMachine(t, tt.machine)
			disks, err := List()
			if err != nil {
				t.Fatal(err)
			}
			var d *Disk
			for i := range disks {
				if disks[i].Name == tt.disk {
					d = &disks[i]
				}
			}
			if d == nil {
				t.Fatalf("List() has no %s", tt.disk)
			}
			if diff := cmp.Diff(tt.want, summarize(*d)); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.disk, diff)
			}
			if d.Path != fakeDevRoot+"/"+tt.disk {
				t.Errorf("Path = %q, want %q", d.Path, fakeDevRoot+"/"+tt.disk)
			}

			// Get (after the device node) must agree with List.
			g, err := getDevNum(d.Path, d.Major, d.Minor)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(*d, g); diff != "" {
				t.Errorf("getDevNum differs from List (-list +get):\n%s", diff)
			}
		})
	}
}

func TestGetPartitionFixture(t *testing.T) {
	useMachine(t, "ws")
	_, err := getDevNum("/dev/disk/by-label/data", 8, 2)
	if !errors.Is(err, ErrIsPartition) {
		t.Fatalf("err = %v, want ErrIsPartition", err)
	}
	want := "/dev/disk/by-label/data is partition 2 of " + fakeDevRoot + "/sda; flash the whole disk " + fakeDevRoot + "/sda"
	if err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}
	if _, err := getDevNum("/dev/x", 99, 99); err == nil {
		t.Errorf("getDevNum of an unknown device number succeeded")
	}
}

func TestPartitionsFixture(t *testing.T) {
	useMachine(t, "ws")
	tests := []struct {
		disk string
		want []string
	}{
		{"nvme0n1", []string{"nvme0n1p1", "nvme0n1p2"}},
		{"sda", []string{"sda1", "sda2"}},
		{"sdc", nil},
		{"nosuch", nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, Partitions(tt.disk)); diff != "" {
			t.Errorf("Partitions(%q) (-want +got):\n%s", tt.disk, diff)
		}
	}
}
