package ctl

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
)

func newSettingsCmd(e *env) *cobra.Command {
	return groupCmd(e, "settings", "Show or change the server's settings (proxy-DHCP, cijoe-online runs)",
		`Server settings changed at run time: the network interface (and, when it
has several addresses, the subnet) on which bty-web answers PXE clients
as a proxy-DHCP server, next to the network's own DHCP server; and how
many cijoe-online workflow runs bty-web runs at once.`,
		newSettingsGetCmd(e), newSettingsSetCmd(e))
}

func newSettingsGetCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "get",
		Short: "Show the settings and the server's network interfaces",
		Long: `Show the proxy-DHCP setting, whether the responder runs and what it
offers, the TFTP port, bty-web's SSH public key (put it in the
authorized_keys of the images cijoe-online machines boot), the cijoe
program bty-web runs (or that it has none: cijoe-online runs fail), how
many runs it runs at once, and the server's network interfaces with
their addresses (the choices for settings set --proxydhcp-iface).`,
		Example: `  bty-ctl settings get
  bty-ctl settings get --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "settings-get"
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			s, err := c.Settings(cmd.Context())
			if err != nil {
				return e.fail(name, e.apiErr("getting settings", c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "settings": s})
			}
			printSettings(e, s)
			return nil
		},
	}
}

func printSettings(e *env, s api.Settings) {
	w := e.stdout
	iface := s.ProxyDHCPIface
	if iface == "" {
		iface = "(off)"
	}
	fmt.Fprintf(w, "%-22s %s\n", "proxy-DHCP interface:", iface)
	fmt.Fprintf(w, "%-22s %s\n", "proxy-DHCP subnet:", dash(s.ProxyDHCPSubnet))
	if s.ProxyDHCPEnvOverride != "" {
		fmt.Fprintf(w, "%-22s BTY_PROXYDHCP_IFACE=%s on the server (the setting cannot be changed here)\n", "overridden by:", s.ProxyDHCPEnvOverride)
	}
	state := "not running"
	if st := s.ProxyDHCPStatus; st.Running {
		state = fmt.Sprintf("running on %s as %s, iPXE clients get %s", st.Interface, st.ServerIP, st.BootstrapURL)
	}
	fmt.Fprintf(w, "%-22s %s\n", "proxy-DHCP:", state)
	tftp := "off"
	if s.TFTPPort > 0 {
		tftp = fmt.Sprintf("port %d", s.TFTPPort)
	}
	fmt.Fprintf(w, "%-22s %s\n", "TFTP:", tftp)
	fmt.Fprintf(w, "%-22s %s\n", "ssh public key:", dash(s.SSHPublicKey))
	cijoe := s.Cijoe
	if cijoe == "" {
		cijoe = "not found on bty-web's PATH: cijoe-online runs fail"
	}
	fmt.Fprintf(w, "%-22s %s\n", "cijoe:", cijoe)
	maxRuns := "-"
	if s.MaxRuns > 0 {
		maxRuns = strconv.Itoa(s.MaxRuns)
	}
	fmt.Fprintf(w, "%-22s %s\n", "max runs:", maxRuns)
	if len(s.Interfaces) > 0 {
		fmt.Fprintln(w)
		tw := newTable(w)
		fmt.Fprintln(tw, "INTERFACE\tSTATE\tADDRESSES")
		for _, i := range s.Interfaces {
			up := "down"
			if i.Up {
				up = "up"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", i.Name, up, dash(strings.Join(i.Addrs, ", ")))
		}
		tw.Flush()
	}
}

func newSettingsSetCmd(e *env) *cobra.Command {
	var iface, subnet string
	var maxRuns int
	cmd := &cobra.Command{
		Use:   "set [--proxydhcp-iface IFACE [--proxydhcp-subnet CIDR]] [--max-runs N]",
		Short: "Turn proxy-DHCP on (or off) on an interface of the server, bound cijoe-online runs",
		Long: `Set the interface on which bty-web answers PXE clients as a proxy-DHCP
server; --proxydhcp-iface "" turns it off. --proxydhcp-subnet picks the
interface's address to offer when it has several. The server applies the
change at once and refuses (keeping the old setting) one it cannot apply,
for example an interface it does not have: exit 1 with its reason.

Proxy-DHCP hands out no addresses; it only adds boot options beside the
network's own DHCP server.

--max-runs N (1-64) is how many cijoe-online workflow runs bty-web runs
at once; more wait queued.`,
		Example: `  bty-ctl settings set --proxydhcp-iface eth1
  bty-ctl settings set --proxydhcp-iface br0 --proxydhcp-subnet 10.0.0.0/24
  bty-ctl settings set --proxydhcp-iface ""
  bty-ctl settings set --max-runs 8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "settings-set"
			f := cmd.Flags()
			var u api.SettingsUpdate
			if !f.Changed("proxydhcp-iface") && !f.Changed("proxydhcp-subnet") && !f.Changed("max-runs") {
				return e.fail(name, usageErr("nothing to set: give --proxydhcp-iface IFACE (\"\" turns proxy-DHCP off) and optionally --proxydhcp-subnet CIDR, or --max-runs N"), nil)
			}
			if f.Changed("max-runs") {
				if maxRuns < 1 || maxRuns > 64 {
					return e.fail(name, usageErr("--max-runs %d: give 1 to 64 runs at once", maxRuns), nil)
				}
				n := maxRuns
				u.MaxRuns = &n
			}
			if f.Changed("proxydhcp-iface") {
				v := strings.TrimSpace(iface)
				u.ProxyDHCPIface = &v
			}
			if f.Changed("proxydhcp-subnet") {
				v := strings.TrimSpace(subnet)
				if v != "" {
					if _, _, err := net.ParseCIDR(v); err != nil {
						return e.fail(name, usageErr("--proxydhcp-subnet %q: want CIDR notation like 10.0.0.0/24", v), nil)
					}
				}
				u.ProxyDHCPSubnet = &v
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			s, err := c.PutSettings(cmd.Context(), u)
			if err != nil {
				return e.fail(name, e.apiErr("changing settings", c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"ok": true, "server": c.Server(), "settings": s})
			}
			printSettings(e, s)
			return nil
		},
	}
	cmd.Flags().StringVar(&iface, "proxydhcp-iface", "", `interface to answer PXE clients on ("" turns proxy-DHCP off)`)
	cmd.Flags().StringVar(&subnet, "proxydhcp-subnet", "", "subnet (CIDR) of the interface address to offer")
	cmd.Flags().IntVar(&maxRuns, "max-runs", 0, "how many cijoe-online runs bty-web runs at once (1-64)")
	return cmd
}
