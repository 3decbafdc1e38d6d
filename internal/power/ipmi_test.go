package power

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// ipmiSim is OpenIPMI's BMC simulator serving RMCP+ on 127.0.0.1, with
// its chassis_control program a shell script that keeps the power and
// boot device in files and logs every get and set, so the tests see
// what the BMC was asked to do.
type ipmiSim struct {
	addr   string
	events string // the chassis_control program's log: "get power", "set power 1", "set boot pxe"
}

const simUser, simPassword = "admin", "Sim-pa55word-7Q"

func startIPMISim(t *testing.T) *ipmiSim {
	t.Helper()
	bin, err := lookIPMISim()
	if err != nil {
		t.Skip("ipmi_sim not installed (Debian package openipmi; scripts/install-deps.sh test installs it)")
	}
	dir := t.TempDir()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	events := filepath.Join(dir, "machine.log")
	script := filepath.Join(dir, "machine.sh")
	write(t, script, `#!/bin/sh
# ipmi_sim's chassis_control program: $1 is get or set, then
# parameters (get) or parameter value pairs (set).
dir=`+dir+`
op=$1; shift
echo "$op $*" >> `+events+`
if [ "$op" = get ]; then
  for p; do
    case $p in
      power) echo "power:$(cat $dir/power 2>/dev/null || echo 0)" ;;
      boot) echo "boot:$(cat $dir/boot 2>/dev/null || echo default)" ;;
    esac
  done
else
  while [ $# -ge 2 ]; do
    case $1 in power|boot) echo "$2" > $dir/$1 ;; esac
    shift 2
  done
fi
`, 0o755)
	write(t, filepath.Join(dir, "lan.conf"), fmt.Sprintf(`name "btytest"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, script, simUser, simPassword), 0o644)
	write(t, filepath.Join(dir, "emu.cmds"), "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n", 0o644)
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "emu.cmds"), "-s", state, "-n", "-p")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so cleanup also ends the machine script
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("ipmi_sim output:\n%s", out.String())
		}
	})
	return &ipmiSim{addr: fmt.Sprintf("127.0.0.1:%d", port), events: events}
}

func lookIPMISim() (string, error) { return exec.LookPath("ipmi_sim") }

func write(t *testing.T, path, s string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), mode); err != nil {
		t.Fatal(err)
	}
}

func (s *ipmiSim) log(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(s.events)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var sets []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.HasPrefix(l, "set ") {
			sets = append(sets, l)
		}
	}
	return sets
}

func simConfig(s *ipmiSim) Config {
	return Config{Driver: DriverIPMI, Address: s.addr, Username: simUser, Password: simPassword, CipherSuite: 3}
}

// TestIPMISim runs the driver against OpenIPMI's ipmi_sim: the power
// states and chassis controls the BMC sees, the boot device, and a
// wrong password.
func TestIPMISim(t *testing.T) {
	sim := startIPMISim(t)
	ctx := context.Background()
	d, err := New(simConfig(sim), WithTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// ipmi_sim opens its port shortly after it starts.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err = d.Power(ctx, Status); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("ipmi_sim never answered: %v", err)
	}
	steps := []struct {
		a    Action
		want State
		sets []string // chassis_control sets the BMC made
	}{
		{Status, StateOff, nil},
		{Off, StateOff, nil},
		{On, StateOn, []string{"set power 1"}},
		{On, StateOn, nil},
		{Off, StateOff, []string{"set power 0"}},
		{Cycle, StateOn, []string{"set power 1"}}, // a cycle of an off machine is a power on
	}
	for i, s := range steps {
		n := len(sim.log(t))
		st, err := d.Power(ctx, s.a)
		if err != nil {
			t.Fatalf("step %d %s: %v", i, s.a, err)
		}
		if st != s.want {
			t.Errorf("step %d %s: state %s, want %s", i, s.a, st, s.want)
		}
		if diff := cmp.Diff(s.sets, sim.log(t)[n:], cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("step %d %s: BMC chassis sets (-want +got):\n%s", i, s.a, diff)
		}
	}
	// A cycle of a running machine: ipmi_sim powers off at once and on
	// again a moment later.
	n := len(sim.log(t))
	if _, err := d.Power(ctx, Cycle); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		st, err := d.Power(ctx, Status)
		if err == nil && st == StateOn && len(sim.log(t)) >= n+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a cycle: %s, %v, sets %q; want on after set power 0 and 1", st, err, sim.log(t)[n:])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if diff := cmp.Diff([]string{"set power 0", "set power 1"}, sim.log(t)[n:]); diff != "" {
		t.Errorf("cycle: BMC chassis sets (-want +got):\n%s", diff)
	}

	ok, err := d.PXEOnce(ctx)
	if err != nil || !ok {
		t.Fatalf("PXEOnce: %v, %v; want true", ok, err)
	}
	if l := sim.log(t); l[len(l)-1] != "set boot pxe" {
		t.Errorf("PXEOnce: the BMC's last set is %q, want \"set boot pxe\"", l[len(l)-1])
	}

	// The library's own cipher suite choice (ipmi_sim lacks the SHA-256
	// suites go-ipmi tries first) reaches the same BMC.
	c := simConfig(sim)
	c.CipherSuite = 0
	if st, err := newIPMIOrFatal(t, c).Power(ctx, Status); err != nil || st != StateOn {
		t.Errorf("cipher suite chosen by the library: %s, %v; want on", st, err)
	}

	// A wrong password, with a set cipher suite and with the library
	// trying them all (go-ipmi then reports the RAKP failure as text).
	for _, suite := range []int{3, 0} {
		c = simConfig(sim)
		c.Password = "Wrong-pa55word-Y"
		c.CipherSuite = suite
		n = len(sim.log(t))
		_, err = newIPMIOrFatal(t, c).Power(ctx, Off)
		if !errors.Is(err, ErrCredentials) || !strings.Contains(err.Error(), "check the username and password") || !strings.Contains(err.Error(), sim.addr) {
			t.Errorf("wrong password, cipher suite %d: %v; want ErrCredentials naming the BMC and what to check", suite, err)
		}
		if err != nil && strings.Contains(err.Error(), c.Password) {
			t.Errorf("wrong password: the error shows it: %v", err)
		}
		if got := sim.log(t)[n:]; len(got) != 0 {
			t.Errorf("wrong password: the BMC still did %q", got)
		}
	}
}

func newIPMIOrFatal(t *testing.T, c Config) Driver {
	t.Helper()
	d, err := New(c, WithTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestIPMISilentBMC: a UDP port that takes datagrams and never answers
// gives ErrUnreachable naming the address and timeout, within the bound.
func TestIPMISilentBMC(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c := Config{Driver: DriverIPMI, Address: pc.LocalAddr().String(), Username: "admin", Password: "Silent-pa55word-3"}
	d, err := New(c, WithTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = d.Power(context.Background(), Status)
	took := time.Since(start)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("silent BMC: %v; want ErrUnreachable", err)
	}
	for _, want := range []string{c.Address, "within 500ms", "UDP port"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if took > 1500*time.Millisecond {
		t.Errorf("gave up after %s, want about the 500ms timeout", took)
	}
}
