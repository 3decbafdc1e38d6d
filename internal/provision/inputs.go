package provision

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/goccy/go-yaml"
)

// MaxInputBytes bounds a user-data or meta-data file (cloud-init's own
// datasources stay far below this).
const MaxInputBytes = 16 << 20

// InputError is a problem with a provisioning input the user must fix
// (exit 2 at the CLI).
type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

func inputErr(format string, args ...any) error {
	return &InputError{fmt.Sprintf(format, args...)}
}

// userDataHeaders are the first-line markers cloud-init dispatches on
// (cloud-init's user_data handlers); anything else is ignored by
// cloud-init, so bty refuses it rather than write a seed nothing runs.
var userDataHeaders = []string{
	"#cloud-config-archive", "#cloud-config-jsonp", "#cloud-config",
	"#include-once", "#include", "#!", "#cloud-boothook", "#part-handler",
	"#upstart-job", "## template: jinja",
}

// CheckUserData checks that b is user-data cloud-init will act on: a
// #cloud-config document that parses as a YAML mapping, a script (#!),
// another cloud-init header, a MIME multi-part archive or gzip data.
func CheckUserData(b []byte) error { return checkCloudData("user-data", b) }

// CheckVendorData checks vendor-data (the NoCloud seed's vendor-data,
// which cloud-init reads like user-data, with lower precedence) as
// CheckUserData checks user-data.
func CheckVendorData(b []byte) error { return checkCloudData("vendor-data", b) }

// checkCloudData checks user-data or vendor-data (what).
func checkCloudData(what string, b []byte) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return inputErr("%s is empty; start it with #cloud-config (or #! for a script)", what)
	}
	if len(b) > MaxInputBytes {
		return inputErr("%s is %d bytes; the limit is %d", what, len(b), MaxInputBytes)
	}
	if bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		return nil // gzip: cloud-init decompresses it
	}
	if bytes.HasPrefix(b, []byte("\xef\xbb\xbf")) {
		return inputErr("%s starts with a UTF-8 byte-order mark, which hides its #cloud-config header from cloud-init; save it without a BOM", what)
	}
	first, _, _ := bytes.Cut(b, []byte("\n"))
	first = bytes.TrimRight(first, "\r \t")
	lower := strings.ToLower(string(first))
	if strings.HasPrefix(lower, "content-type:") || strings.HasPrefix(lower, "mime-version:") {
		return nil // a MIME multi-part archive
	}
	header := ""
	for _, h := range userDataHeaders {
		if strings.HasPrefix(string(first), h) {
			header = h
			break
		}
	}
	switch header {
	case "":
		line := string(first)
		if len(line) > 40 {
			line = line[:40] + "..."
		}
		if !utf8.ValidString(line) {
			line = fmt.Sprintf("%q", line)
		}
		return inputErr("%s starts with %q, which cloud-init does not recognise: the first line must be #cloud-config (YAML), #! (a script) or another cloud-init header (#include, #cloud-boothook, ...)", what, line)
	case "#cloud-config":
		if string(first) != "#cloud-config" {
			return inputErr("%s's first line is %q; cloud-init wants exactly #cloud-config", what, string(first))
		}
		var doc any
		if err := unmarshalYAML(b, &doc); err != nil {
			return inputErr("%s is not valid YAML: %s", what, yamlMessage(err))
		}
		if doc == nil {
			return nil // only the header: cloud-init accepts and does nothing
		}
		if _, ok := doc.(map[string]any); !ok {
			return inputErr("%s's #cloud-config document is a %s, not a mapping of keys (like packages:, runcmd:)", what, yamlKind(doc))
		}
	case "#cloud-config-archive":
		var doc any
		if err := unmarshalYAML(b, &doc); err != nil {
			return inputErr("%s (#cloud-config-archive) is not valid YAML: %s", what, yamlMessage(err))
		}
	}
	return nil
}

// CheckMetaData checks a user-supplied NoCloud meta-data file: a YAML
// (or JSON) mapping.
func CheckMetaData(b []byte) error {
	if len(b) > MaxInputBytes {
		return inputErr("meta-data is %d bytes; the limit is %d", len(b), MaxInputBytes)
	}
	_, err := parseMetaData(b)
	return err
}

func parseMetaData(b []byte) (map[string]any, error) {
	var doc any
	if err := unmarshalYAML(b, &doc); err != nil {
		return nil, inputErr("meta-data is not valid YAML: %s", yamlMessage(err))
	}
	if doc == nil {
		return map[string]any{}, nil
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return nil, inputErr("meta-data is a %s; NoCloud wants a mapping like \"instance-id: ...\" and \"local-hostname: ...\"", yamlKind(doc))
	}
	return m, nil
}

// unmarshalYAML decodes like cloud-init's PyYAML would accept: a
// repeated key is not an error (the last one wins).
func unmarshalYAML(b []byte, v any) error {
	return yaml.UnmarshalWithOptions(b, v, yaml.AllowDuplicateMapKey())
}

// yamlMessage is "line 4, column 2: <what is wrong>".
func yamlMessage(err error) string {
	var ye yaml.Error
	if errors.As(err, &ye) && ye.GetToken() != nil {
		pos := ye.GetToken().Position
		return fmt.Sprintf("line %d, column %d: %s", pos.Line, pos.Column, ye.GetMessage())
	}
	return err.Error()
}

func yamlKind(v any) string {
	switch v.(type) {
	case []any:
		return "list"
	case string:
		return "string"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// CheckHostname checks a hostname (one label or a dotted FQDN) against
// RFC 1123: labels of letters, digits and hyphens, 1-63 characters, not
// starting or ending with a hyphen; 253 characters at most.
func CheckHostname(h string) error {
	if h == "" {
		return inputErr("the hostname is empty")
	}
	if len(h) > 253 {
		return inputErr("hostname %q is longer than 253 characters", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return inputErr("hostname %q has an empty label (two dots, or a dot at an end)", h)
		}
		if len(label) > 63 {
			return inputErr("hostname %q has a label longer than 63 characters", h)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return inputErr("hostname %q: a label cannot start or end with a hyphen", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return inputErr("hostname %q contains %q; use letters, digits, hyphens and dots", h, c)
			}
		}
	}
	return nil
}

// NewInstanceID returns a fresh cloud-init instance-id: a new id makes
// cloud-init treat the next boot as a first boot and apply the seed.
func NewInstanceID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return "bty-" + time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// MetaData returns the meta-data to seed: the user's file (if any) with
// local-hostname set to hostname when given and an instance-id added when
// missing, or a synthesised document. The user's bytes are kept as they
// are when nothing needs adding.
func MetaData(user []byte, hostname, instanceID string) ([]byte, error) {
	if user == nil {
		if hostname == "" {
			return nil, errors.New("meta-data needs a hostname")
		}
		return fmt.Appendf(nil, "instance-id: %s\nlocal-hostname: %s\n", instanceID, hostname), nil
	}
	m, err := parseMetaData(user)
	if err != nil {
		return nil, err
	}
	_, hasID := m["instance-id"]
	if hasID && (hostname == "" || m["local-hostname"] == hostname) {
		return user, nil
	}
	if !hasID {
		m["instance-id"] = instanceID
	}
	if hostname != "" {
		m["local-hostname"] = hostname
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("writing meta-data: %w", err)
	}
	return out, nil
}
