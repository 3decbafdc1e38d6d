package disk

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Mount
		wantErr bool
	}{
		{
			name: "optional fields and super options",
			in:   "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n",
			want: []Mount{{ID: 36, ParentID: 35, Major: 98, Minor: 0, Root: "/mnt1", Mountpoint: "/mnt2",
				Options: "rw,noatime", FSType: "ext3", Source: "/dev/root", SuperOptions: "rw,errors=continue"}},
		},
		{
			name: "no optional fields",
			in:   "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n",
			want: []Mount{{ID: 27, ParentID: 1, Major: 254, Minor: 0, Root: "/", Mountpoint: "/",
				Options: "rw,relatime", FSType: "ext4", Source: "/dev/vda", SuperOptions: "rw,discard"}},
		},
		{
			name: "escaped space, tab, newline and backslash",
			in: `40 22 8:1 /a\040b /mnt/my\040data\011x\012y\134z rw - ext4 /dev/disk/by-label/My\040Disk rw` + "\n" +
				`41 22 259:3 / /media/USB\040STICK rw,nosuid shared:5 - exfat /dev/sdb1 rw` + "\n",
			want: []Mount{
				{ID: 40, ParentID: 22, Major: 8, Minor: 1, Root: "/a b", Mountpoint: "/mnt/my data\tx\ny\\z",
					Options: "rw", FSType: "ext4", Source: "/dev/disk/by-label/My Disk", SuperOptions: "rw"},
				{ID: 41, ParentID: 22, Major: 259, Minor: 3, Root: "/", Mountpoint: "/media/USB STICK",
					Options: "rw,nosuid", FSType: "exfat", Source: "/dev/sdb1", SuperOptions: "rw"},
			},
		},
		{
			name: "a lone backslash and a short escape stay as they are",
			in:   `50 1 0:40 / /odd\path\04 rw - tmpfs tmpfs rw` + "\n",
			want: []Mount{{ID: 50, ParentID: 1, Major: 0, Minor: 40, Root: "/", Mountpoint: `/odd\path\04`,
				Options: "rw", FSType: "tmpfs", Source: "tmpfs", SuperOptions: "rw"}},
		},
		{
			name: "anonymous device (btrfs) keeps its source",
			in:   "60 1 0:52 /@home /home rw,relatime shared:3 - btrfs /dev/mapper/vg-home rw,space_cache=v2,subvolid=257\n\n",
			want: []Mount{{ID: 60, ParentID: 1, Major: 0, Minor: 52, Root: "/@home", Mountpoint: "/home",
				Options: "rw,relatime", FSType: "btrfs", Source: "/dev/mapper/vg-home", SuperOptions: "rw,space_cache=v2,subvolid=257"}},
		},
		{name: "no separator", in: "36 35 98:0 / / rw ext3 /dev/root rw\n", wantErr: true},
		{name: "bad device number", in: "36 35 98 / / rw - ext3 /dev/root rw\n", wantErr: true},
		{name: "bad mount id", in: "x 35 98:0 / / rw - ext3 /dev/root rw\n", wantErr: true},
		{name: "truncated after separator", in: "36 35 98:0 / / rw - ext3\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMountinfo(strings.NewReader(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseMountinfo succeeded with %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseMountinfo (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSwaps(t *testing.T) {
	in := "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" +
		"/dev/sda2                               partition\t8388604\t\t0\t\t-2\n" +
		"/swap\\040file                           file\t\t1048572\t\t0\t\t-3\n"
	got, err := ParseSwaps(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Swap{{Filename: "/dev/sda2", Type: "partition"}, {Filename: "/swap file", Type: "file"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseSwaps (-want +got):\n%s", diff)
	}
}

func TestProblemsClean(t *testing.T) {
	d := Disk{Path: "/dev/sdz", Name: "sdz", SizeBytes: 1 << 30, Type: "disk"}
	if p := d.Problems(); p != nil {
		t.Errorf("Problems() of a clean disk = %q, want nil", p)
	}
	d.SizeBytes = 0
	if diff := cmp.Diff([]string{"has no medium (size 0); insert one or pick another disk"}, d.Problems()); diff != "" {
		t.Errorf("Problems() of an empty reader (-want +got):\n%s", diff)
	}
}
