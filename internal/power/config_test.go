package power

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	ipmi := Config{Driver: DriverIPMI, Address: "10.0.0.5", Username: "admin", Password: "pw"}
	rf := Config{Driver: DriverRedfish, Address: "https://bmc1.example", Username: "admin", Password: "pw"}
	with := func(c Config, f func(*Config)) Config { f(&c); return c }
	cases := []struct {
		name   string
		c      Config
		fields []string // the fields Validate names, in order
	}{
		{"none", Config{Driver: DriverNone}, nil},
		{"ipmi", ipmi, nil},
		{"ipmi with port", with(ipmi, func(c *Config) { c.Address = "bmc1.example:6230" }), nil},
		{"ipmi v6", with(ipmi, func(c *Config) { c.Address = "[fd00::5]:623" }), nil},
		{"ipmi bare v6", with(ipmi, func(c *Config) { c.Address = "fd00::5" }), nil},
		{"ipmi suite 17", with(ipmi, func(c *Config) { c.CipherSuite = 17 }), nil},
		{"redfish", rf, nil},
		{"redfish http port slash", with(rf, func(c *Config) { c.Address = "http://10.0.0.5:8000/" }), nil},
		{"empty", Config{}, []string{"driver"}},
		{"unknown driver", Config{Driver: "amt"}, []string{"driver"}},
		{"ipmi empty", Config{Driver: DriverIPMI}, []string{"address", "username", "password"}},
		{"ipmi bad port", with(ipmi, func(c *Config) { c.Address = "10.0.0.5:70000" }), []string{"address"}},
		{"ipmi port zero", with(ipmi, func(c *Config) { c.Address = "10.0.0.5:0" }), []string{"address"}},
		{"ipmi no host", with(ipmi, func(c *Config) { c.Address = ":623" }), []string{"address"}},
		{"ipmi url", with(ipmi, func(c *Config) { c.Address = "https://10.0.0.5" }), []string{"address"}},
		{"ipmi userinfo", with(ipmi, func(c *Config) { c.Address = "admin@10.0.0.5" }), []string{"address"}},
		{"ipmi suite 20", with(ipmi, func(c *Config) { c.CipherSuite = 20 }), []string{"cipher_suite"}},
		{"ipmi suite negative", with(ipmi, func(c *Config) { c.CipherSuite = -1 }), []string{"cipher_suite"}},
		{"ipmi with redfish fields", with(ipmi, func(c *Config) { c.System = "1"; c.Insecure = true }), []string{"system", "insecure"}},
		{"redfish empty", Config{Driver: DriverRedfish}, []string{"address", "username", "password"}},
		{"redfish no scheme", with(rf, func(c *Config) { c.Address = "bmc1.example" }), []string{"address"}},
		{"redfish ftp", with(rf, func(c *Config) { c.Address = "ftp://bmc1.example" }), []string{"address"}},
		{"redfish userinfo", with(rf, func(c *Config) { c.Address = "https://admin:pw@bmc1.example" }), []string{"address"}},
		{"redfish query", with(rf, func(c *Config) { c.Address = "https://bmc1.example/?x=1" }), []string{"address"}},
		{"redfish path", with(rf, func(c *Config) { c.Address = "https://bmc1.example/redfish/v1" }), []string{"address"}},
		{"redfish no host", with(rf, func(c *Config) { c.Address = "https://:443" }), []string{"address"}},
		{"redfish bad port", with(rf, func(c *Config) { c.Address = "https://bmc1.example:99999" }), []string{"address"}},
		{"redfish cipher suite", with(rf, func(c *Config) { c.CipherSuite = 3 }), []string{"cipher_suite"}},
		{"long username", with(rf, func(c *Config) { c.Username = strings.Repeat("u", 256) }), []string{"username"}},
		{"255 bytes is fine", with(rf, func(c *Config) { c.Username = strings.Repeat("u", 255) }), nil},
		{"two-line password", with(rf, func(c *Config) { c.Password = "a\nb" }), []string{"password"}},
		{"bad utf8 system", with(rf, func(c *Config) { c.System = "\xff" }), []string{"system"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, fe := range tc.c.Validate() {
				got = append(got, fe.Field)
				if len(fe.Msg) < 10 || strings.Contains(fe.Msg, "\n") {
					t.Errorf("%s: message %q is not one helpful line", fe.Field, fe.Msg)
				}
			}
			if diff := cmp.Diff(tc.fields, got); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
			err := tc.c.Err()
			var fe *FieldError
			if (err == nil) != (len(tc.fields) == 0) || (err != nil && (!errors.As(err, &fe) || fe.Field != tc.fields[0])) {
				t.Errorf("Err() = %v; want a *FieldError for %v", err, tc.fields)
			}
			if _, err := New(tc.c); len(tc.fields) > 0 && (err == nil || errors.Is(err, ErrNoDriver)) {
				t.Errorf("New accepted an invalid config: %v", err)
			}
		})
	}
}

func TestNoneDriver(t *testing.T) {
	d, err := New(Config{Driver: DriverNone})
	if d != nil || !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), "by other means") {
		t.Errorf("New(none) = %v, %v; want ErrNoDriver saying to reboot it by other means", d, err)
	}
}

// TestPasswordNeverShown collects every string bty makes from a Config
// or a failed call (errors, String, GoString, %v, slog text and JSON,
// the drivers' own logs, JSON of Redacted) and fails when the password
// is in one.
func TestPasswordNeverShown(t *testing.T) {
	const pw = "Leak-Canary-Pw-4711"
	var out []string
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	addErr := func(what string, err error) {
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		out = append(out, what+": "+err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
	}

	// A password that also sits where it does not belong: in the
	// address, the username and the system.
	configs := []Config{
		{Driver: DriverRedfish, Address: "https://bmc.example", Username: "admin", Password: pw},
		{Driver: DriverRedfish, Address: "https://admin:" + pw + "@bmc.example", Username: pw, Password: pw, System: pw},
		{Driver: DriverIPMI, Address: "admin:" + pw + "@10.0.0.5", Username: "admin", Password: pw},
		{Driver: DriverIPMI, Address: "10.0.0.5:" + pw, Username: "admin", Password: pw},
		{Driver: "amt-" + pw, Password: pw},
		{Driver: DriverNone, Password: pw},
	}
	for i, c := range configs {
		out = append(out, c.String(), c.GoString(), fmt.Sprintf("%v|%+v|%#v|%s", c, c, c, c))
		logger.Info("config", "c", c, "ptr", &c)
		slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "c", c)
		j, err := json.Marshal(c.Redacted())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(j))
		for _, fe := range c.Validate() {
			out = append(out, fe.Error())
		}
		if err := c.Err(); err != nil {
			out = append(out, err.Error())
		}
		if _, err = New(c, WithLogger(logger)); err != nil {
			out = append(out, err.Error())
		} else if i != 0 {
			t.Errorf("New #%d accepted %v", i, c)
		}
	}

	// Failed calls: refused credentials, a hung and a refused BMC, for
	// both drivers.
	b := newTestBMC(t)
	url := b.serve()
	ctx := context.Background()
	for i, a := range []Action{Status, On, Off, Cycle} {
		user := "admin"
		if i%2 == 1 { // the password pasted into the username too: errors quote the username
			user = pw
		}
		d, err := New(Config{Driver: DriverRedfish, Address: url, Username: user, Password: pw}, WithLogger(logger), WithRetries(1, time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.Power(ctx, a)
		addErr("redfish 401 "+string(a), err)
		_, err = d.PXEOnce(ctx)
		addErr("redfish 401 pxe", err)
	}
	hung := newTestBMC(t)
	hung.hang = make(chan struct{})
	hungURL := hung.serve()
	t.Cleanup(func() { close(hung.hang) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() // refuses connections once closed
	ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, c := range []Config{
		{Driver: DriverRedfish, Address: hungURL, Username: "admin", Password: pw},
		{Driver: DriverRedfish, Address: closedURL, Username: "admin", Password: pw},
		{Driver: DriverIPMI, Address: pc.LocalAddr().String(), Username: "admin", Password: pw},
	} {
		d, err := New(c, WithLogger(logger), WithTimeout(200*time.Millisecond), WithRetries(1, time.Millisecond))
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		_, err = d.Power(ctx, Cycle)
		addErr("unreachable "+c.Address, err)
	}
	// ipmi_sim with a wrong password, when it is installed.
	if _, err := lookIPMISim(); err == nil {
		sim := startIPMISim(t)
		time.Sleep(300 * time.Millisecond)
		c := simConfig(sim)
		c.Password = pw
		d, err := New(c, WithLogger(logger), WithTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.Power(ctx, Status)
		addErr("ipmi wrong password", err)
	}

	out = append(out, logs.String())
	if logs.Len() == 0 {
		t.Error("nothing was logged; the log check checks nothing")
	}
	for _, s := range out {
		if strings.Contains(s, pw) {
			t.Errorf("the password shows in: %s", s)
		}
	}
	if !strings.Contains(strings.Join(out, "\n"), redacted) {
		t.Error("no output says [redacted]; the check may be looking at the wrong strings")
	}
}
