package ctl

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/labels"
	"github.com/btyproject/bty/internal/provision"
)

func newMachinesCmd(e *env) *cobra.Command {
	return groupCmd(e, "machines", "List, show, register, change and delete machines",
		`Machines are keyed by MAC address, accepted in any case with ':' or '-'
(aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF) and shown as aa:bb:cc:dd:ee:ff.

Each has a boot policy, what its next PXE boot gets: local (boot the
local disk), flash (chain the live env and reflash the assigned image on
every PXE boot, booting the disk once after each flash), or tui (the
interactive live env; what an unknown machine gets on first contact).`,
		newMachinesListCmd(e), newMachinesGetCmd(e), newMachinesSetCmd(e), newMachinesDeleteCmd(e), newMachinesPowerCmd(e),
		newMachinesReflashCmd(e), newMachinesHistoryCmd(e), newMachinesRunsCmd(e), newMachinesRunLogCmd(e), newMachinesRunCancelCmd(e),
		newMachinesReportFailureCmd(e), newMachinesClearCmd(e), newMachinesActionsCmd(e))
}

// parseMAC normalises a MAC argument locally, so a typo is misuse (exit
// 2) without a round trip.
func parseMAC(s string) (fleet.MAC, error) {
	mac, err := fleet.ParseMAC(s)
	if err != nil {
		return fleet.MAC{}, exitcode.Wrap(exitcode.Usage, err)
	}
	return mac, nil
}

func newMachinesListCmd(e *env) *cobra.Command {
	var selector string
	cmd := &cobra.Command{
		Use:   "list [--selector SEL]",
		Short: "List every machine, or those a label selector picks",
		Long: `List every machine known to the server, by MAC: boot policy (for flash,
what the next PXE boot does), assigned image, provisioning mode,
hostname, when and from where it was last seen, when it was last
flashed. Machines that registered themselves by PXE-booting are marked
"(discovered)". Times are local.`,
		Example: `  bty-ctl machines list
  bty-ctl machines list --selector 'role=ci,rack!=r3'
  bty-ctl machines list --json | jq -r '.machines[] | select(.boot_policy=="flash") | .mac'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-list"
			if _, err := labels.Parse(selector); err != nil {
				return e.fail(name, exitcode.Wrap(exitcode.Usage, fmt.Errorf("--selector: %w", err)), nil)
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			ms, err := c.MachinesMatching(cmd.Context(), selector)
			if err != nil {
				return e.fail(name, e.apiErr("listing machines", c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "machines": ms})
			}
			if len(ms) == 0 && selector != "" {
				fmt.Fprintf(e.stderr, "no machine on %s matches %s\n", c.Server(), selector)
				return nil
			}
			if len(ms) == 0 {
				fmt.Fprintf(e.stderr, "no machines on %s yet: add one with bty-ctl machines set MAC, or PXE-boot one\n", c.Server())
				return nil
			}
			tw := newTable(e.stdout)
			fmt.Fprintln(tw, "MAC\tPOLICY\tIMAGE\tPROVISIONING\tHOSTNAME\tLAST SEEN\tFROM\tLAST FLASHED\tLABELS")
			for _, m := range ms {
				mac := m.MAC.String()
				if m.DiscoveredAt != nil {
					mac += " (discovered)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mac, policyString(m), dash(m.Image),
					dash(string(m.ProvisioningMode)), dash(m.Hostname), localTime(m.LastSeenAt), dash(m.LastSeenIP), localTime(m.LastFlashedAt),
					dash(m.Labels.String()))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&selector, "selector", "", "only the machines whose labels match this selector (role=ci,rack!=r3,gpu,!quarantined,tier in (a,b))")
	return cmd
}

// policyString is the boot policy, with what the next PXE boot gets
// when that is not the policy (fleet.Decide): "flash (next: local)"
// after a done, or with no image assigned.
func policyString(m api.Machine) string {
	if d := fleet.Decide(m); m.BootPolicy.Valid() && d.Serve != m.BootPolicy {
		return string(m.BootPolicy) + " (next: " + string(d.Serve) + ")"
	}
	return dash(string(m.BootPolicy))
}

func newMachinesGetCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "get MAC",
		Short: "Show one machine's record",
		Long: `Show every field of one machine's record. An unknown MAC is exit 1; a
malformed one exit 2 (checked before asking the server).`,
		Example: `  bty-ctl machines get aa:bb:cc:dd:ee:ff
  bty-ctl machines get AA-BB-CC-DD-EE-FF --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-get"
			mac, c, err := e.macClient(name, args[0])
			if err != nil {
				return err
			}
			m, err := c.Machine(cmd.Context(), mac)
			if err != nil {
				return e.fail(name, e.apiErr("getting machine "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "machine": m})
			}
			printMachine(e.stdout, m)
			return nil
		},
	}
}

func printMachine(w io.Writer, m api.Machine) {
	rows := [][2]string{
		{"mac", m.MAC.String()},
		{"boot policy", dash(string(m.BootPolicy))},
		{"next PXE boot", fleet.Decide(m).Why},
		{"image", dash(m.Image)},
		{"provisioning", dash(string(m.ProvisioningMode))},
		{"hostname", dash(m.Hostname)},
		{"labels", dash(m.Labels.String())},
		{"derived labels", dash(m.DerivedLabels.String())},
		{"cijoe workflow", dash(m.CijoeWorkflowRef)},
		{"cijoe ssh user", orDefault(m.CijoeSSHUser, "the image's default user, else root")},
		{"cijoe ssh port", orDefault(portText(m.CijoeSSHPort), "22")},
		{"cijoe timeout", orDefault(m.CijoeTimeout, fleet.DefaultWorkflowTimeout.String())},
		{"last workflow", workflowText(m)},
		{"user-data", seedSize(m.UserData, "none")},
		{"meta-data", seedSize(m.MetaData, "made by the server (hostname, new instance-id each flash)")},
		{"last known good", knownGood(m.LastKnownGood)},
		{"discovered", localTime(m.DiscoveredAt)},
		{"last seen", localTime(m.LastSeenAt)},
		{"last seen from", dash(m.LastSeenIP)},
		{"last flashed", localTime(m.LastFlashedAt)},
		{"last failed", localTime(m.LastFailedAt)},
		{"last failure", dash(m.LastFailure)},
		{"flash cycle", cycleText(m.Cycle)},
		{"PXE conflict", conflictText(m)},
		{"power", powerText(m.Power)},
		{"ready check", readyText(m)},
		{"flash deadline", dash(m.FlashDeadline)},
		{"latest flash", flashText(m.Flash)},
		{"state", m.State()},
		{"health watch", healthWatchText(m)},
		{"health", healthText(m.Health)},
		{"recovery", recoveryText(m.Recovery)},
		{"quarantine", quarantineText(m.Quarantine)},
		{"created", localTime(&m.CreatedAt)},
		{"updated", localTime(&m.UpdatedAt)},
	}
	for _, d := range m.Drift {
		rows = append(rows, [2]string{"drift", driftText(d)})
	}
	rows = append(rows, inventoryRows(m)...)
	for _, r := range rows {
		fmt.Fprintf(w, "%-22s %s\n", r[0]+":", r[1])
	}
}

// orDefault is v, or what applies when it is empty.
func orDefault(v, def string) string {
	if v == "" {
		return "- (" + def + ")"
	}
	return v
}

func portText(p int) string {
	if p == 0 {
		return ""
	}
	return strconv.Itoa(p)
}

// workflowText is the machine's last workflow run: status, when, and
// where its output is on the server.
func workflowText(m api.Machine) string {
	if m.LastWorkflowStatus == nil {
		return "-"
	}
	t := string(*m.LastWorkflowStatus) + " at " + localTime(m.LastWorkflowRunAt)
	if m.LastWorkflowOutputPath != "" {
		t += ", output " + m.LastWorkflowOutputPath
	}
	return t + " (bty-ctl machines runs " + m.MAC.String() + ")"
}

// driftText is one way the record left its baseline: "image: baseline
// X, now Y", hashes shortened, an empty side "none".
func driftText(d fleet.DriftItem) string {
	side := func(v string) string {
		switch {
		case v == "":
			return "none"
		case len(v) == 64 && strings.Trim(v, "0123456789abcdef") == "":
			return shortSHA(v)
		}
		return v
	}
	return d.Field + ": baseline " + side(d.Baseline) + ", now " + side(d.Now)
}

// powerText is the machine's power control (never its password).
func powerText(p *api.Power) string {
	if p == nil {
		return "- (no BMC: power it by other means)"
	}
	t := p.Driver + " " + p.Address
	if p.Username != "" {
		t += ", user " + p.Username
	}
	if p.PasswordSet {
		t += ", password set"
	} else {
		t += ", no password"
	}
	return t
}

// cycleText says where a machine's flash cycle is bound and until when.
func cycleText(c *fleet.Cycle) string {
	if c == nil {
		return "-"
	}
	return "bound to " + c.IP + " since " + localTime(&c.StartedAt) + ", until " + localTime(&c.ExpiresAt)
}

// conflictText is the last PXE conflict: another address sending the
// machine's MAC during its flash cycle.
func conflictText(m api.Machine) string {
	if m.LastConflictAt == nil {
		return "-"
	}
	return "WARNING " + m.LastConflictIP + " sent this MAC during the flash cycle at " + localTime(m.LastConflictAt) +
		" (served the local disk, nothing changed; check for impersonation)"
}

func newMachinesSetCmd(e *env) *cobra.Command {
	var image, policy, hostname, provisioning, workflow, userData, metaData, readyCheck, deadline, sshUser, runTimeout string
	var healthEvery, healthFailAfter, selector string
	var sshPort int
	var labelFlags []string
	var pw powerFlags
	cmd := &cobra.Command{
		Use:   "set MAC|--selector SEL [--image NAME] [--policy local|flash|tui] [--hostname H] [--provisioning MODE] [--cijoe-workflow REF] [--cijoe-ssh-user U] [--cijoe-ssh-port N] [--cijoe-timeout D] [--health-every D] [--health-fail-after D] [--user-data FILE] [--meta-data FILE] [--label KEY=VALUE|KEY-]...",
		Short: "Register a machine or change its record",
		Long: `Create the machine if it is new (boot policy local unless --policy says
otherwise), else change only the fields given. An empty value clears a
field (--image "" unassigns the image).

  --policy        local | flash | tui
  --provisioning  none | cloud-init | cijoe | cijoe-online
  --image         a name from "bty-ctl images list"
  --hostname      an RFC 1123 host name, for cloud-init's local-hostname
  --user-data     a cloud-init user-data file (#cloud-config YAML, a #!
                  script, ...): the live env provisions the flashed disk
                  with it when --provisioning is cloud-init
  --meta-data     a NoCloud meta-data file; without one the server makes
                  one with the hostname and an instance-id that changes
                  on every flash, so cloud-init runs again each time

Power control (bty-ctl machines power), through the machine's BMC:

  --power-driver          ipmi | redfish | none (none removes it)
  --power-address         IPMI host[:port] (623), or the Redfish base URL
  --power-user            the BMC account
  --power-password-stdin  read the BMC password from standard input (one
                          line); it is never shown again, by any command
  --power-cipher-suite    IPMI lanplus cipher suite (default: the BMC's best)
  --power-system          Redfish system, when the BMC has several
  --power-insecure        Redfish: accept the BMC's self-signed certificate

Readiness (bty-ctl machines reflash --wait waits for it):

  --ready-check     phone-home | tcp:PORT | none | "" (the default:
                    phone-home in cloud-init mode, else tcp:22)
  --flash-deadline  how long a flash may take to ready before it is
                    marked timeout, like 45m ("" the server's default, 1h)

cijoe-online (bty-web runs the machine's workflow over SSH once its
flash is ready; bty-ctl workflows, bty-ctl machines runs):

  --cijoe-workflow  the workflow to run, a name from "bty-ctl workflows list"
  --cijoe-ssh-user  the login ("" the image's default user, else root)
  --cijoe-ssh-port  the SSH port (0: 22)
  --cijoe-timeout   how long a run may take, 1m to 24h ("" 30m)

Failure recovery (bty-web checks the machine while its OS runs, and
power cycles, reflashes or quarantines it when it fails; bty-ctl
machines actions MAC shows what it did):

  --health-every       how often to check, 5s to 1h ("" no health watch)
  --health-fail-after  how long the check must fail before recovery
                       starts, 10s to 24h ("" 5m)

The seed is served only to the machine itself while it flashes, and
only shown to logged-in callers. --user-data "" clears it.

A malformed MAC, policy, provisioning mode or seed file is exit 2
before the server is asked; what the server refuses (a bad hostname or image name) exit 1.
Policy flash reflashes the machine on every PXE boot; set it back to
local to stop.

--selector SEL instead of a MAC changes every machine the label selector
picks (not --hostname, which is one machine's); each one's outcome is
listed, and any that refused makes the exit 1.`,
		Example: `  bty-ctl machines set AA-BB-CC-DD-EE-FF --image debian-12.img.zst --policy flash
  bty-ctl machines set aa:bb:cc:dd:ee:ff --hostname node7 --provisioning cloud-init
  bty-ctl machines set aa:bb:cc:dd:ee:ff --provisioning cloud-init --user-data node7.yaml
  bty-ctl machines set aa:bb:cc:dd:ee:ff --policy local
  echo "$BMC_PASSWORD" | bty-ctl machines set aa:bb:cc:dd:ee:ff --power-driver ipmi --power-address 10.0.0.9 --power-user admin --power-password-stdin`,
		Args: macOrSelector(&selector, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-set"
			var mac fleet.MAC
			var err error
			if selector == "" {
				if mac, err = parseMAC(args[0]); err != nil {
					return e.fail(name, err, map[string]any{"mac": args[0]})
				}
			}
			f := cmd.Flags()
			var u api.MachineUpdate
			for _, s := range []struct {
				flag string
				v    string
				dst  **string
			}{
				{"image", image, &u.Image},
				{"hostname", hostname, &u.Hostname},
				{"cijoe-workflow", workflow, &u.CijoeWorkflowRef},
			} {
				if f.Changed(s.flag) {
					v := strings.TrimSpace(s.v)
					*s.dst = &v
				}
			}
			if f.Changed("policy") {
				p := fleet.Policy(strings.TrimSpace(policy))
				if !p.Valid() {
					return e.fail(name, usageErr("--policy %q: want one of %s", p, joinValues(fleet.Policies)), map[string]any{"mac": mac})
				}
				u.BootPolicy = &p
			}
			if f.Changed("provisioning") {
				m := fleet.Mode(strings.TrimSpace(provisioning))
				if !m.Valid() {
					return e.fail(name, usageErr("--provisioning %q: want one of %s", m, joinValues(fleet.Modes)), map[string]any{"mac": mac})
				}
				u.ProvisioningMode = &m
			}
			for _, s := range []struct {
				flag  string
				path  string
				dst   **string
				check func([]byte) error
			}{{"user-data", userData, &u.UserData, provision.CheckUserData}, {"meta-data", metaData, &u.MetaData, provision.CheckMetaData}} {
				if !f.Changed(s.flag) {
					continue
				}
				v, err := readSeed(s.flag, s.path, s.check)
				if err != nil {
					return e.fail(name, err, map[string]any{"mac": mac})
				}
				*s.dst = &v
			}
			if f.Changed("ready-check") {
				rc := fleet.ReadyCheck(strings.TrimSpace(readyCheck))
				if !rc.Valid() {
					return e.fail(name, usageErr("--ready-check %q: want phone-home, tcp:PORT, none or \"\"", rc), map[string]any{"mac": mac})
				}
				u.ReadyCheck = &rc
			}
			if f.Changed("flash-deadline") {
				d := strings.TrimSpace(deadline)
				if _, err := fleet.ParseFlashDeadline(d); err != nil {
					return e.fail(name, exitcode.Wrap(exitcode.Usage, fmt.Errorf("--flash-deadline: %w", err)), map[string]any{"mac": mac})
				}
				u.FlashDeadline = &d
			}
			if f.Changed("cijoe-ssh-user") {
				v := strings.TrimSpace(sshUser)
				if errs := (fleet.MachineUpdate{CijoeSSHUser: &v}).Validate(); len(errs) > 0 {
					return e.fail(name, usageErr("--cijoe-ssh-user %s", errs[0].Msg), map[string]any{"mac": mac})
				}
				u.CijoeSSHUser = &v
			}
			if f.Changed("cijoe-ssh-port") {
				if sshPort < 0 || sshPort > 65535 {
					return e.fail(name, usageErr("--cijoe-ssh-port %d: give a TCP port 1-65535, or 0 for 22", sshPort), map[string]any{"mac": mac})
				}
				p := sshPort
				u.CijoeSSHPort = &p
			}
			if f.Changed("cijoe-timeout") {
				d := strings.TrimSpace(runTimeout)
				if _, err := fleet.ParseWorkflowTimeout(d); err != nil {
					return e.fail(name, exitcode.Wrap(exitcode.Usage, fmt.Errorf("--cijoe-timeout: %w", err)), map[string]any{"mac": mac})
				}
				u.CijoeTimeout = &d
			}
			for _, d := range []struct {
				flag  string
				v     string
				dst   **string
				parse func(string) (time.Duration, error)
			}{{"health-every", healthEvery, &u.HealthEvery, fleet.ParseHealthEvery}, {"health-fail-after", healthFailAfter, &u.HealthFailAfter, fleet.ParseHealthFailAfter}} {
				if !f.Changed(d.flag) {
					continue
				}
				v := strings.TrimSpace(d.v)
				if _, err := d.parse(v); err != nil {
					return e.fail(name, exitcode.Wrap(exitcode.Usage, fmt.Errorf("--%s: %w", d.flag, err)), map[string]any{"mac": mac})
				}
				*d.dst = &v
			}
			if u.Power, err = pw.update(f, e.stdin); err != nil {
				return e.fail(name, err, map[string]any{"mac": mac})
			}
			for _, l := range labelFlags {
				k, v, err := labels.ParseFlag(l)
				if err != nil {
					return e.fail(name, exitcode.Wrap(exitcode.Usage, err), map[string]any{"mac": mac})
				}
				if u.Labels == nil {
					u.Labels = fleet.LabelUpdate{}
				}
				u.Labels[k] = v
			}
			if u.IsEmpty() {
				return e.fail(name, usageErr("nothing to set: give at least one of --image, --policy, --hostname, --provisioning, --label, --cijoe-workflow, --cijoe-ssh-user, --cijoe-ssh-port, --cijoe-timeout, --health-every, --health-fail-after, --user-data, --meta-data, --ready-check, --flash-deadline, --power-* (to only register the machine: --policy local)"),
					map[string]any{"mac": mac})
			}
			if selector != "" {
				if u.Hostname != nil && *u.Hostname != "" {
					return e.fail(name, usageErr("--hostname does not go with --selector: a host name is one machine's"), map[string]any{"selector": selector})
				}
				return e.runBulk(cmd, name, api.BulkRequest{Selector: selector, Action: "set", Update: &u})
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, map[string]any{"mac": mac})
			}
			m, created, err := c.PutMachine(cmd.Context(), mac, u)
			if err != nil {
				return e.fail(name, e.apiErr("setting machine "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			var catalog []api.Image
			if m.Image != "" {
				// Best effort: the record is saved either way.
				catalog, _ = c.Images(cmd.Context())
			}
			warnings := setWarnings(m, catalog)
			if m.ProvisioningMode == fleet.ModeCijoeOnline {
				// Best effort too: a server that cannot say leaves
				// the cijoe check out.
				var settings *api.Settings
				if s, err := c.Settings(cmd.Context()); err == nil {
					settings = &s
				}
				warnings = append(warnings, cijoeWarnings(m, settings)...)
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "created": created, "machine": m, "warnings": warnings})
			}
			verb := "updated"
			if created {
				verb = "created"
			}
			fmt.Fprintf(e.stderr, "%s machine %s\n", verb, m.MAC)
			for _, w := range warnings {
				fmt.Fprintf(e.stderr, "warning: %s\n", w)
			}
			printMachine(e.stdout, m)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&image, "image", "", "image to flash, a name from bty-ctl images list (\"\" unassigns)")
	f.StringVar(&policy, "policy", "", "boot policy: local, flash or tui")
	f.StringVar(&hostname, "hostname", "", "host name for provisioning (\"\" clears)")
	f.StringVar(&provisioning, "provisioning", "", "provisioning mode: none, cloud-init, cijoe or cijoe-online")
	f.StringVar(&workflow, "cijoe-workflow", "", "CIJOE workflow reference for cijoe modes (\"\" clears)")
	f.StringArrayVar(&labelFlags, "label", nil, "set a label KEY=VALUE, or remove one with KEY- (repeatable; Kubernetes label syntax)")
	f.StringVar(&sshUser, "cijoe-ssh-user", "", "login of cijoe-online runs (\"\" the image's default user, else root)")
	f.IntVar(&sshPort, "cijoe-ssh-port", 0, "SSH port of cijoe-online runs (0: 22)")
	f.StringVar(&runTimeout, "cijoe-timeout", "", "how long a cijoe-online run may take, like 45m (\"\" 30m)")
	addSelectorFlag(cmd, &selector)
	f.StringVar(&healthEvery, "health-every", "", "how often bty-web checks the machine's health while its OS runs, like 30s (\"\" no health watch)")
	f.StringVar(&healthFailAfter, "health-fail-after", "", "how long the health check must fail before recovery starts, like 5m (\"\" 5m)")
	f.StringVar(&userData, "user-data", "", "cloud-init user-data file for provisioning cloud-init (\"\" clears)")
	f.StringVar(&metaData, "meta-data", "", "cloud-init meta-data file (\"\" clears: the server makes one)")
	f.StringVar(&readyCheck, "ready-check", "", "when a flashed machine is ready: phone-home, tcp:PORT, none (\"\" the default)")
	f.StringVar(&deadline, "flash-deadline", "", "how long a flash may take to ready, like 45m (\"\" the server's default)")
	pw.register(f)
	return cmd
}

// setWarnings says what in a saved record will make its machine's next
// flash fail, so the operator hears it now and not from the machine:
// an image the catalog (when it could be listed) does not have, or
// cannot flash; cloud-init with no user-data; cijoe, which the live env
// cannot run.
func setWarnings(m api.Machine, catalog []api.Image) []string {
	warnings := []string{}
	if m.Image != "" && catalog != nil {
		i := slices.IndexFunc(catalog, func(im api.Image) bool { return im.Name == m.Image })
		switch {
		case i < 0:
			warnings = append(warnings, fmt.Sprintf("image %s is not in the server's catalog (bty-ctl images list): a flash fails until it is uploaded", m.Image))
		case catalog[i].Error != "":
			warnings = append(warnings, fmt.Sprintf("image %s cannot be flashed: %s", m.Image, catalog[i].Error))
		}
	}
	if m.BootPolicy != fleet.PolicyFlash {
		return warnings
	}
	if m.ProvisioningMode == fleet.ModeCloudInit && m.UserData == "" {
		warnings = append(warnings, "provisioning cloud-init with no user-data on the record: the live env's flash fails until you give --user-data FILE")
	}
	if _, _, err := m.ProvisioningMode.InLiveEnv(); err != nil {
		warnings = append(warnings, err.Error())
	}
	return warnings
}

// cijoeWarnings says what will make a cijoe-online machine's runs fail:
// no workflow named, or no cijoe on bty-web's PATH (settings, when they
// could be read, say).
func cijoeWarnings(m api.Machine, settings *api.Settings) []string {
	var warnings []string
	if m.ProvisioningMode != fleet.ModeCijoeOnline {
		return nil
	}
	if m.CijoeWorkflowRef == "" {
		warnings = append(warnings, "provisioning cijoe-online with no workflow on the record: its runs fail until you give --cijoe-workflow NAME (bty-ctl workflows list)")
	}
	if settings != nil && settings.Cijoe == "" {
		warnings = append(warnings, "cijoe is not on bty-web's PATH (bty-ctl settings get): cijoe-online runs fail until it is installed there")
	}
	return warnings
}

// readSeed reads a --user-data/--meta-data file and checks it as bty
// flash does; "" clears the field.
func readSeed(flag, path string, check func([]byte) error) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageErr("--%s: %v", flag, err)
	}
	if len(b) > fleet.MaxSeedBytes {
		return "", usageErr("--%s %s is %d bytes; the server keeps at most %d", flag, path, len(b), fleet.MaxSeedBytes)
	}
	if err := check(b); err != nil {
		return "", usageErr("--%s %s: %v", flag, path, err)
	}
	return string(b), nil
}

func seedSize(v, none string) string {
	if v == "" {
		return none
	}
	first, _, _ := strings.Cut(v, "\n")
	if len(first) > 40 {
		first = first[:40] + "..."
	}
	return fmt.Sprintf("%d bytes (%s)", len(v), first)
}

// joinValues lists the non-empty values of an enumeration for a message.
func joinValues[T ~string](vs []T) string {
	var out []string
	for _, v := range vs {
		if v != "" {
			out = append(out, string(v))
		}
	}
	return strings.Join(out, ", ")
}

func newMachinesDeleteCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "delete MAC",
		Short: "Delete a machine's record",
		Long: `Delete a machine's record. If the machine PXE-boots again it is
rediscovered with boot policy tui. An unknown MAC is exit 1.`,
		Example: `  bty-ctl machines delete aa:bb:cc:dd:ee:ff`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-delete"
			mac, c, err := e.macClient(name, args[0])
			if err != nil {
				return err
			}
			if err := c.DeleteMachine(cmd.Context(), mac); err != nil {
				return e.fail(name, e.apiErr("deleting machine "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"ok": true, "server": c.Server(), "mac": mac})
			}
			fmt.Fprintf(e.stdout, "deleted machine %s\n", mac)
			return nil
		},
	}
}

// macClient checks a MAC argument and opens a logged-in client; errors
// come back already reported as command name's failure.
func (e *env) macClient(name, arg string) (fleet.MAC, *client.Client, error) {
	mac, err := parseMAC(arg)
	if err != nil {
		return fleet.MAC{}, nil, e.fail(name, err, map[string]any{"mac": arg})
	}
	c, err := e.authClient()
	if err != nil {
		return fleet.MAC{}, nil, e.fail(name, err, map[string]any{"mac": mac})
	}
	return mac, c, nil
}

// knownGood is a baseline in one line ("-" for none).
func knownGood(k *fleet.KnownGood) string {
	switch {
	case k.IsZero():
		return "-"
	case k.RunID == 0:
		return k.Image + " (set by hand before bty recorded baselines)"
	}
	return fmt.Sprintf("%s (sha256 %s), workflow %s (sha256 %s), run %d at %s", k.Image, shortSHA(k.ImageSHA256),
		dash(k.Workflow), shortSHA(k.WorkflowSHA256), k.RunID, localTime(&k.At))
}

// inventoryRows are the short hardware summary of the machine's last
// inventory (docs/reference.md, "Inventory"): one row for the machine,
// one per NIC, disk and GPU.
func inventoryRows(m api.Machine) [][2]string {
	inv := m.Inventory
	if inv == nil {
		return [][2]string{{"hardware", "- (no inventory yet: the live env reports it on its next boot)"}}
	}
	cpu := dash(inv.CPUModel)
	if inv.CPUs > 0 {
		cpu = strconv.Itoa(inv.CPUs) + " x " + cpu
	}
	rows := [][2]string{{"hardware", fmt.Sprintf("%s, %s, %s memory (reported %s)", dash(inv.Firmware), cpu,
		sizeOrUnknown(inv.MemoryBytes), localTime(m.InventoryAt))}}
	for _, n := range inv.NICs {
		t := n.MAC.String() + " " + dash(n.Name)
		switch {
		case n.Link && n.SpeedMbps > 0:
			t += fmt.Sprintf(", link %d Mb/s", n.SpeedMbps)
		case n.Link:
			t += ", link"
		default:
			t += ", no link"
		}
		rows = append(rows, [2]string{"nic", t})
	}
	for _, d := range inv.Disks {
		t := dash(d.Name) + " " + dash(d.Transport) + " " + sizeOrUnknown(d.SizeBytes)
		if d.Model != "" {
			t += " " + d.Model
		}
		if d.Serial != "" {
			t += ", serial " + d.Serial
		}
		rows = append(rows, [2]string{"disk", t})
	}
	for _, p := range inv.PCI {
		if p.Kind == "gpu" {
			rows = append(rows, [2]string{"gpu", fmt.Sprintf("%s %s:%s", p.Address, p.Vendor, p.Device)})
		}
	}
	return rows
}

// sizeOrUnknown is n bytes for people, "?" when not known (0).
func sizeOrUnknown(n int64) string {
	if n <= 0 {
		return "?"
	}
	return human.Bytes(n)
}
