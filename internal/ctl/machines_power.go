package ctl

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// powerFlags are machines set's --power-* flags.
type powerFlags struct {
	driver, address, user, system string
	cipherSuite                   int
	passwordStdin, insecure       bool
}

func (p *powerFlags) register(f *pflag.FlagSet) {
	f.StringVar(&p.driver, "power-driver", "", "BMC power driver: ipmi, redfish, or none (removes power control)")
	f.StringVar(&p.address, "power-address", "", "BMC address: IPMI host[:port], or the Redfish base URL (https://bmc)")
	f.StringVar(&p.user, "power-user", "", "BMC user name")
	f.BoolVar(&p.passwordStdin, "power-password-stdin", false, "read the BMC password from standard input (one line; never shown again)")
	f.IntVar(&p.cipherSuite, "power-cipher-suite", 0, "IPMI lanplus cipher suite (0: the BMC's best)")
	f.StringVar(&p.system, "power-system", "", "Redfish system (@odata.id or Id) when the BMC has several")
	f.BoolVar(&p.insecure, "power-insecure", false, "Redfish: accept the BMC's self-signed TLS certificate")
}

// update is the PowerUpdate the changed flags ask for (nil: none), with
// the password read from stdin when --power-password-stdin is given.
func (p *powerFlags) update(f *pflag.FlagSet, stdin io.Reader) (*api.PowerUpdate, error) {
	var u api.PowerUpdate
	any := false
	for _, s := range []struct {
		flag string
		v    string
		dst  **string
	}{{"power-driver", p.driver, &u.Driver}, {"power-address", p.address, &u.Address}, {"power-user", p.user, &u.Username}, {"power-system", p.system, &u.System}} {
		if f.Changed(s.flag) {
			v := strings.TrimSpace(s.v)
			*s.dst, any = &v, true
		}
	}
	if u.Driver != nil && *u.Driver != "ipmi" && *u.Driver != "redfish" && *u.Driver != fleet.DriverNone {
		return nil, usageErr("--power-driver %q: want ipmi, redfish or none", *u.Driver)
	}
	if f.Changed("power-cipher-suite") {
		u.CipherSuite, any = &p.cipherSuite, true
	}
	if f.Changed("power-insecure") {
		u.Insecure, any = &p.insecure, true
	}
	if p.passwordStdin {
		line, err := bufio.NewReader(io.LimitReader(stdin, 4<<10)).ReadString('\n')
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("--power-password-stdin: reading standard input: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return nil, usageErr("--power-password-stdin: standard input has no password (pipe it in: echo \"$PW\" | bty-ctl machines set ...)")
		}
		u.Password, any = &pw, true
	}
	if !any {
		return nil, nil
	}
	return &u, nil
}

func newMachinesPowerCmd(e *env) *cobra.Command {
	var selector string
	cmd := &cobra.Command{
		Use:   "power MAC|--selector SEL on|off|cycle|status",
		Short: "Power a machine on, off or cycle it through its BMC, or ask its state",
		Long: `Runs a power action through the machine's BMC (IPMI or Redfish, as set
with bty-ctl machines set --power-*) and prints the power state the BMC
reports right after. off is a hard power off; cycle powers a machine
that is off on. A machine with no power driver, a BMC that refuses the
credentials or does not answer: exit 1 with the reason.

With --selector instead of a MAC, the action runs on every machine the
label selector picks (eight at once), and each one's outcome is listed;
any that failed makes the exit 1.`,
		Example: `  bty-ctl machines power 52:54:00:12:34:56 status
  bty-ctl machines power 52:54:00:12:34:56 cycle
  bty-ctl machines power --selector rack=r3 off`,
		Args: macOrSelector(&selector, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-power"
			action := strings.ToLower(strings.TrimSpace(args[len(args)-1]))
			switch action {
			case "on", "off", "cycle", "status":
			default:
				return e.fail(name, usageErr("%q: want on, off, cycle or status", args[len(args)-1]), map[string]any{"selector": selector})
			}
			if selector != "" {
				return e.runBulk(cmd, name, api.BulkRequest{Selector: selector, Action: "power", Power: action})
			}
			mac, err := parseMAC(args[0])
			if err != nil {
				return e.fail(name, err, map[string]any{"mac": args[0]})
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, map[string]any{"mac": mac})
			}
			res, err := c.Power(cmd.Context(), mac, action)
			if err != nil {
				return e.fail(name, e.apiErr("power "+action+" for "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "mac": mac, "result": res})
			}
			fmt.Fprintf(e.stdout, "%s: power %s (%s, after %s)\n", mac, res.State, res.Driver, res.Action)
			return nil
		},
	}
	addSelectorFlag(cmd, &selector)
	return cmd
}
