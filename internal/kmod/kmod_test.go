package kmod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// These tests need no kernel: a hand-made index with the shapes real
// modules have (see real_test.go for Debian's kernel).

func testIndex() *Index {
	m := func(name string, deps []string, aliases []string, soft ...string) *Module {
		return &Module{Name: name, Path: "kernel/" + name + ".ko", Depends: deps, Aliases: aliases, SoftPre: soft}
	}
	return &Index{Kernel: "6.1.0-test", Modules: map[string]*Module{
		"ext4":           m("ext4", []string{"jbd2", "mbcache", "crc16"}, []string{"fs-ext4", "ext3"}, "crypto-crc32c"),
		"jbd2":           m("jbd2", []string{}, []string{}),
		"mbcache":        m("mbcache", []string{}, []string{}),
		"crc16":          m("crc16", []string{}, []string{}),
		"crc32c_generic": m("crc32c_generic", []string{}, []string{"crypto-crc32c", "crc32c"}),
		"crc32c_intel":   m("crc32c_intel", []string{}, []string{"crypto-crc32c", "crc32c-intel"}),
		"e1000e":         m("e1000e", []string{}, []string{"pci:v00008086d000010D3sv*sd*bc*sc*i*", "pci:v00008086d0000[0-9]ABCsv*sd*bc*sc*i*"}),
		"virtio_net":     m("virtio_net", []string{"virtio_ring", "virtio", "net_failover"}, []string{"virtio:d00000001v*"}),
		"virtio_ring":    m("virtio_ring", []string{}, []string{}),
		"virtio":         m("virtio", []string{}, []string{}),
		"net_failover":   m("net_failover", []string{"failover"}, []string{}),
		"failover":       m("failover", []string{}, []string{}),
		// a soft dependency loop (a real thing between crypto modules)
		"loopa":  m("loopa", []string{}, []string{}, "loopb"),
		"loopb":  m("loopb", []string{}, []string{}, "loopa"),
		"broken": m("broken", []string{"gone"}, []string{}),
	}}
}

func TestResolve(t *testing.T) {
	ix := testIndex()
	tests := []struct {
		name, q string
		want    []string
	}{
		{"module name", "ext4", []string{"ext4"}},
		{"dash in a name", "crc32c-intel", []string{"crc32c_intel"}},
		{"alias", "fs-ext4", []string{"ext4"}},
		{"alias with underscore for dash", "fs_ext4", []string{"ext4"}},
		{"alias shared by two modules", "crypto-crc32c", []string{"crc32c_generic", "crc32c_intel"}},
		{"pci modalias glob", "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00", []string{"e1000e"}},
		{"bracket class keeps its range", "pci:v00008086d00003ABCsv0sd0bc02sc00i00", []string{"e1000e"}},
		{"virtio modalias", "virtio:d00000001v00001AF4", []string{"virtio_net"}},
		{"prefix is not a match", "pci:v00008086d000010D3", nil},
		{"unknown", "nope", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, ix.Resolve(tc.q)); d != "" {
				t.Errorf("Resolve(%q) (-want +got):\n%s", tc.q, d)
			}
		})
	}
}

func TestLoadOrder(t *testing.T) {
	ix := testIndex()
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr string
	}{
		{"deps and softdeps first", []string{"ext4"}, []string{"jbd2", "mbcache", "crc16", "crc32c_generic", "crc32c_intel", "ext4"}, ""},
		{"transitive", []string{"virtio_net"}, []string{"virtio_ring", "virtio", "failover", "net_failover", "virtio_net"}, ""},
		{"each once", []string{"virtio_net", "virtio", "virtio_net"}, []string{"virtio_ring", "virtio", "failover", "net_failover", "virtio_net"}, ""},
		{"dash name", []string{"crc32c-intel"}, []string{"crc32c_intel"}, ""},
		{"soft loop is not an error", []string{"loopa"}, []string{"loopb", "loopa"}, ""},
		{"unknown", []string{"nope"}, nil, `"nope"`},
		{"missing dependency", []string{"broken"}, nil, "gone (needed by broken)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ix.LoadOrder(tc.in...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadOrder(%v) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("LoadOrder(%v) (-want +got):\n%s", tc.in, d)
			}
		})
	}
}

func TestSubset(t *testing.T) {
	ix := testIndex()
	sub, err := ix.Subset([]string{"ext4", "virtio-net"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range sub.Modules {
		names = append(names, n)
	}
	want := []string{"crc16", "crc32c_generic", "crc32c_intel", "ext4", "failover", "jbd2", "mbcache", "net_failover", "virtio", "virtio_net", "virtio_ring"}
	if d := cmp.Diff(want, names, sortStrings); d != "" {
		t.Errorf("Subset (-want +got):\n%s", d)
	}
	if sub.Kernel != ix.Kernel {
		t.Errorf("Kernel = %q", sub.Kernel)
	}
	// A copy: changing the subset leaves the index alone.
	sub.Modules["ext4"].Path = "changed"
	if ix.Modules["ext4"].Path == "changed" {
		t.Error("Subset shares modules with the index")
	}
	for _, bad := range [][]string{{"ext4", "nosuch_mod"}, {"broken"}} {
		if _, err := ix.Subset(bad); err == nil || !strings.Contains(err.Error(), map[bool]string{true: "nosuch_mod", false: "gone"}[bad[0] == "ext4"]) {
			t.Errorf("Subset(%v) error = %v, want one naming the missing module", bad, err)
		}
	}
}

var sortStrings = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

func TestIndexRoundTrip(t *testing.T) {
	ix := testIndex()
	p := filepath.Join(t.TempDir(), IndexFile)
	if err := ix.Write(p); err != nil {
		t.Fatal(err)
	}
	got, err := ReadIndex(p)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(ix, got); d != "" {
		t.Errorf("round trip (-wrote +read):\n%s", d)
	}
	a, _ := ix.Marshal()
	b, _ := got.Marshal()
	if string(a) != string(b) {
		t.Error("Marshal is not stable")
	}
	if !strings.Contains(string(a), `"softdep_pre"`) || strings.Contains(string(a), `"depends": null`) {
		t.Errorf("unexpected JSON:\n%.400s", a)
	}
}

func TestParseModinfo(t *testing.T) {
	info := "softdep=pre: blake2b-256 sha256 post: other\x00license=GPL\x00alias=devname:btrfs-control\x00alias=fs-btrfs\x00" +
		"depends=zstd_compress,raid6_pq,xor,libcrc32c\x00name=btrfs\x00vermagic=6.1.0 SMP\x00\x00"
	got := parseModinfo([]byte(info))
	want := &Module{Name: "btrfs", Depends: []string{"zstd_compress", "raid6_pq", "xor", "libcrc32c"},
		Aliases: []string{"devname:btrfs-control", "fs-btrfs"}, SoftPre: []string{"blake2b-256", "sha256"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("parseModinfo (-want +got):\n%s", d)
	}
	empty := parseModinfo([]byte("depends=\x00name=nls_iso8859-1\x00"))
	if empty.Name != "nls_iso8859_1" || empty.Depends == nil || len(empty.Depends) != 0 {
		t.Errorf("parseModinfo(empty depends) = %+v", empty)
	}
}

func TestReadIndexRejects(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":   "{not json",
		"nomodules": `{"kernel":"x"}`,
		"mismatch":  `{"kernel":"x","modules":{"a":{"name":"b","path":"kernel/b.ko","depends":[],"aliases":[]}}}`,
	} {
		p := filepath.Join(dir, name)
		if err := writeFile(p, content); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadIndex(p); err == nil || !strings.Contains(err.Error(), "rebuild the live image") && !strings.Contains(err.Error(), "damaged") {
			t.Errorf("ReadIndex(%s) error = %v, want a damaged-index error", name, err)
		}
	}
	if _, err := ReadIndex(filepath.Join(dir, "absent")); err == nil {
		t.Error("ReadIndex of a missing file: no error")
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }
