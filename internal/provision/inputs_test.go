package provision_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/btyproject/bty/internal/provision"
)

func TestCheckUserData(t *testing.T) {
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte("#cloud-config\n"))
	w.Close()
	cases := []struct {
		name string
		data string
		// want is a substring of the error, "" for valid input.
		want string
	}{
		{"cloud-config", "#cloud-config\npackages: [htop]\nruncmd:\n  - echo hi\n", ""},
		{"cloud-config CRLF", "#cloud-config\r\nhostname: a\r\n", ""},
		{"cloud-config header only", "#cloud-config\n", ""},
		{"script", "#!/bin/sh\necho hi\n", ""},
		{"include", "#include\nhttp://example.invalid/ud\n", ""},
		{"boothook", "#cloud-boothook\n#!/bin/sh\n", ""},
		{"jinja", "## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n", ""},
		{"mime", "Content-Type: multipart/mixed; boundary=\"x\"\nMIME-Version: 1.0\n\n--x--\n", ""},
		{"gzip", gz.String(), ""},
		{"archive", "#cloud-config-archive\n- type: text/cloud-config\n  content: 'a: 1'\n", ""},
		{"empty", "", "empty"},
		{"blank", "  \n\n", "empty"},
		{"no header", "packages: [htop]\n", `starts with "packages: [htop]", which cloud-init does not recognise`},
		{"bom", "\xef\xbb\xbf#cloud-config\n", "byte-order mark"},
		{"bad yaml names the line", "#cloud-config\npackages:\n  - htop\n bad: [\n", "not valid YAML: line"},
		{"tab indent", "#cloud-config\nruncmd:\n\t- echo\n", "not valid YAML"},
		{"list document", "#cloud-config\n- a\n- b\n", "is a list, not a mapping"},
		{"scalar document", "#cloud-config\njust text\n", "is a string, not a mapping"},
		{"header with suffix", "#cloud-configs\na: 1\n", "wants exactly #cloud-config"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := provision.CheckUserData([]byte(c.data))
			switch {
			case c.want == "" && err != nil:
				t.Errorf("valid user-data refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("err = %v; want one containing %q", err, c.want)
			}
			var ie *provision.InputError
			if err != nil && !errors.As(err, &ie) {
				t.Errorf("error is not an InputError: %T", err)
			}
		})
	}
}

func TestCheckHostname(t *testing.T) {
	for _, h := range []string{"a", "node-7", "Node7", "fc-1.lab.example", strings.Repeat("a", 63)} {
		if err := provision.CheckHostname(h); err != nil {
			t.Errorf("%q refused: %v", h, err)
		}
	}
	for h, want := range map[string]string{
		"":                        "empty",
		"-a":                      "hyphen",
		"a-":                      "hyphen",
		"a..b":                    "empty label",
		"a.":                      "empty label",
		"under_score":             `contains '_'`,
		"sp ace":                  `contains ' '`,
		strings.Repeat("a", 64):   "longer than 63",
		strings.Repeat("a.", 127): "longer than 253",
	} {
		if err := provision.CheckHostname(h); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v; want %q", h, err, want)
		}
	}
}

func TestMetaData(t *testing.T) {
	parse := func(b []byte) map[string]any {
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		return m
	}
	got, err := provision.MetaData(nil, "node-1", "iid-1")
	if err != nil {
		t.Fatal(err)
	}
	if m := parse(got); m["instance-id"] != "iid-1" || m["local-hostname"] != "node-1" || len(m) != 2 {
		t.Errorf("synthesised = %v", m)
	}

	user := []byte("# operator's comment\ninstance-id: mine\nlocal-hostname: keep\n")
	got, _ = provision.MetaData(user, "", "iid-2")
	if !bytes.Equal(got, user) {
		t.Errorf("complete user meta-data was rewritten: %q", got)
	}
	got, _ = provision.MetaData([]byte("local-hostname: old\nplatform: lab\n"), "new", "iid-3")
	if m := parse(got); m["instance-id"] != "iid-3" || m["local-hostname"] != "new" || m["platform"] != "lab" {
		t.Errorf("merged = %v", m)
	}
	if _, err := provision.MetaData([]byte("- a\n"), "", "x"); err == nil || !strings.Contains(err.Error(), "is a list") {
		t.Errorf("list meta-data: err = %v", err)
	}
	if err := provision.CheckMetaData([]byte("a: [\n")); err == nil || !strings.Contains(err.Error(), "line") {
		t.Errorf("bad meta-data: err = %v", err)
	}

	a, b := provision.NewInstanceID(), provision.NewInstanceID()
	if a == b || !strings.HasPrefix(a, "bty-") {
		t.Errorf("instance ids %q and %q: want fresh bty- ids", a, b)
	}
}

// TestCheckVendorData: vendor-data is checked as user-data is, and the
// errors name it.
func TestCheckVendorData(t *testing.T) {
	if err := provision.CheckVendorData([]byte("#cloud-config\nphone_home:\n  url: \"http://h/pxe/m/ready?cycle=1\"\n  tries: 30\n")); err != nil {
		t.Errorf("valid vendor-data refused: %v", err)
	}
	for data, want := range map[string]string{
		"phone_home: {}\n":     "vendor-data starts with",
		"#cloud-config\n- a\n": "vendor-data's #cloud-config document is a list",
		"":                     "vendor-data is empty",
	} {
		if err := provision.CheckVendorData([]byte(data)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckVendorData(%q) = %v; want an error containing %q", data, err, want)
		}
	}
}
