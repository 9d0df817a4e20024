package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// vmTimeout covers creating volumes, a handover and libvirt's start.
const vmTimeout = 3 * time.Minute

// migrateTimeout bounds a live migration; Ctrl-C aborts it (the VM stays).
const migrateTimeout = 30 * time.Minute

func newVMCmd(a *app) *cobra.Command {
	return newNounCmd("vm", "Manage virtual machines",
		newVMCreateCmd(a),
		newVMListCmd(a),
		newVMShowCmd(a),
		newVMStartCmd(a),
		newVMStopCmd(a),
		newVMDeleteCmd(a),
		newVMMigrateCmd(a),
		newVMConsoleCmd(a),
		newVMCDROMCmd(a),
		newVMDiskCmd(a),
		newVMSetCmd(a),
		newVMNICCmd(a),
		newVMVNCCmd(a),
		newVMFSFreezeCmd(a),
		newVMFSThawCmd(a),
	)
}

// parseDiskFlag reads SIZE[,replicas=N] or SIZE,backend=rbd[,storage=S][,pool=P].
func parseDiskFlag(s string) (*tandemv1.VMDisk, error) {
	parts := strings.Split(s, ",")
	size, err := parseSize(parts[0])
	if err != nil {
		return nil, fmt.Errorf("--disk %q: %v", s, err)
	}
	d := &tandemv1.VMDisk{SizeBytes: size}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "replicas":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n < 1 || n > 3 {
				return nil, fmt.Errorf("--disk %q: replicas must be 1, 2 or 3", s)
			}
			d.Replicas = uint32(n)
		case "backend":
			if v != "rbd" && v != "replicated" {
				return nil, fmt.Errorf("--disk %q: backend must be replicated (the default) or rbd", s)
			}
			d.Backend = v
		case "storage":
			d.Storage = v
		case "pool":
			d.Pool = v
		default:
			return nil, fmt.Errorf("--disk %q: unknown option %q (want replicas=N, or backend=rbd with storage=S and pool=P)", s, k)
		}
	}
	if d.Backend == "rbd" && d.Replicas != 0 {
		return nil, fmt.Errorf("--disk %q: replicas does not apply to an RBD disk (Ceph's pool replicates it)", s)
	}
	if d.Backend != "rbd" && (d.Storage != "" || d.Pool != "") {
		return nil, fmt.Errorf("--disk %q: storage and pool apply to RBD disks only (backend=rbd)", s)
	}
	return d, nil
}

// parseNICFlag reads [BRIDGE][,mac=MAC][,ip=ADDR]...
func parseNICFlag(s string) (*tandemv1.VMNic, error) {
	n := &tandemv1.VMNic{}
	for i, p := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(p, "=")
		switch {
		case !ok && i == 0:
			n.Bridge = p
		case k == "bridge":
			n.Bridge = v
		case k == "mac":
			n.Mac = v
		case k == "ip":
			n.Ips = append(n.Ips, v)
		default:
			return nil, fmt.Errorf("--nic %q: unknown option %q (want BRIDGE,mac=..,ip=..)", s, p)
		}
	}
	return n, nil
}

func newVMCreateCmd(a *app) *cobra.Command {
	var (
		vcpus                   uint32
		memory                  string
		disks, volumes, nics    []string
		kernel, initrd, cmdline string
		node, antiAffinity      string
		image, cdrom, boot      string
		firmware                string
		machine, cpuModel       string
		userData, metaData      string
		networkConfig           string
		priority                int32
		start, force            bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME --memory SIZE (--disk SIZE[,replicas=N|,backend=rbd] | --disk-volume VOL | --kernel FILE | --cdrom IMAGE)",
		Short: "Create a VM on replicated volumes",
		Long: `Create a VM. Each --disk makes a new replicated volume NAME-diskN; each
--disk-volume uses an existing volume. The VM runs only on the node that is
primary of all its volumes. With --start it starts at once, on --node or where
placement decides (nodes with UpToDate replicas, fewest VMs, most free memory).
N+1 admission control refuses a start that could not be recovered after any
single node failure; --force overrides it with a warning.

NAME is 1-63 lowercase letters, digits, '-' or '_', starting with a letter or
digit (at most 57 with --disk, whose volumes are named NAME-diskN). --kernel
and --initrd are absolute paths of regular files on the nodes; --image is a
regular file (or a link to one) on this machine.

--cdrom IMAGE gives the VM a read-only CD-ROM drive holding an ISO image
uploaded with 'tandem image upload'; 'tandem vm cdrom' changes or ejects it.
--boot sets the firmware's boot order over disk, cdrom and network (default
disk,cdrom: an empty disk falls through to the installer CD, an installed
one boots itself). --firmware uefi boots OVMF (Debian package ovmf on every
node); the UEFI variables (NVRAM) are kept in the VM's record, so they
follow it across migration and failover.

--machine picks the machine type: q35 (the default: PCIe, the CD-ROM on
SATA) or pc (i440fx, the machine of VMs created before q35 was the
default). --cpu-model names a libvirt CPU model (virsh domcapabilities lists
them, e.g. qemu64, Nehalem); every node's libvirt must know it. Without it
(or with default) the VM gets the cluster's, setting vm.cpu_model (qemu64
unless set), read at each start; 'tandem vm set --cpu-model' changes it.

--cloud-init USER-DATA gives the VM a cloud-init NoCloud seed: a read-only
disk (an ISO 9660 file system labelled cidata, next to any --cdrom) holding
user-data, meta-data (--meta-data, default instance-id: the VM's UUID and
local-hostname: its name) and network-config (--network-config). User-data
is #cloud-config YAML or a script (#!); the files are at most 64 KiB
together. They are kept sealed in the VM's record, and whichever node starts
the VM builds the seed, so it follows the VM across migration and failover.`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mem, err := parseSize(memory)
			if err != nil {
				return usageErrorf("--memory: %v", err)
			}
			ci, err := readCloudInit(args[0], userData, metaData, networkConfig)
			if err != nil {
				return err
			}
			req := &tandemv1.CreateVMRequest{Name: args[0], Vcpus: vcpus, MemoryMib: uint32(mem >> 20), Kernel: kernel, Initrd: initrd, Cmdline: cmdline,
				Node: node, AntiAffinity: antiAffinity, Priority: priority, Start: start, Force: force, Cdrom: cdrom, Firmware: firmware, CloudInit: ci,
				Machine: machine, CpuModel: cpuModel}
			switch machine {
			case "", "q35", "pc":
			default:
				return usageErrorf("--machine %q: use q35 (the default) or pc (i440fx)", machine)
			}
			if boot != "" {
				req.Boot = strings.Split(boot, ",")
			}
			for _, s := range disks {
				d, err := parseDiskFlag(s)
				if err != nil {
					return usageErrorf("%v", err)
				}
				req.Disks = append(req.Disks, d)
			}
			for _, v := range volumes {
				req.Disks = append(req.Disks, &tandemv1.VMDisk{Volume: v})
			}
			for _, s := range nics {
				n, err := parseNICFlag(s)
				if err != nil {
					return usageErrorf("%v", err)
				}
				req.Nics = append(req.Nics, n)
			}
			var img *imageInfo
			if image != "" {
				if img, err = probeImage(cmd.Context(), image); err != nil {
					return err
				}
				switch {
				case len(req.Disks) == 0:
					req.Disks = append(req.Disks, &tandemv1.VMDisk{SizeBytes: img.roundedSize()})
				case req.Disks[0].Volume != "":
					return usageErrorf("--image goes into a new disk: give --disk SIZE (or nothing) rather than --disk-volume first")
				case req.Disks[0].SizeBytes < img.VirtualSize:
					return usageErrorf("--disk %s is smaller than the image (%s)", formatBytes(req.Disks[0].SizeBytes), formatBytes(img.VirtualSize))
				}
			}
			return a.withClient(cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) error {
				startNow := req.Start
				if img != nil {
					req.Start = false // the image goes in first
				}
				info, err := c.VM.Create(ctx, req)
				if err != nil {
					return err
				}
				if img != nil {
					vol, err := c.Volume.Show(ctx, &tandemv1.ShowVolumeRequest{Name: info.Volumes[0]})
					if err != nil {
						return err
					}
					if err := importImage(ctx, a.stderr, img, vol); err != nil {
						return fmt.Errorf("VM %s was created, but copying the image failed (delete it or copy again): %w", info.Name, err)
					}
					if startNow {
						if info, err = c.VM.Start(ctx, &tandemv1.VMRequest{Name: info.Name, Node: node, Force: force}); err != nil {
							return err
						}
					}
				}
				return a.print(info, func(w io.Writer) error { return writeVM(w, info) })
			})
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&vcpus, "vcpus", 1, "virtual CPUs")
	f.StringVar(&memory, "memory", "256M", "memory (e.g. 512M, 2G)")
	f.StringArrayVar(&disks, "disk", nil, "new disk SIZE[,replicas=N] (replicated), or SIZE,backend=rbd[,storage=S][,pool=P] (Ceph RBD); repeatable")
	f.StringArrayVar(&volumes, "disk-volume", nil, "existing volume as a disk (repeatable)")
	f.StringArrayVar(&nics, "nic", nil, "network interface BRIDGE[,mac=MAC][,ip=ADDR] (repeatable; empty bridge = the node's default)")
	f.StringVar(&image, "image", "", "copy this disk image (raw, qcow2, ... via qemu-img) into the first, new disk")
	f.StringVar(&cdrom, "cdrom", "", "ISO image (tandem image list) in a read-only CD-ROM drive")
	f.StringVar(&boot, "boot", "", "boot order, comma-separated: disk, cdrom, network (default disk,cdrom)")
	f.StringVar(&firmware, "firmware", "", "bios (SeaBIOS, the default) or uefi (OVMF; its NVRAM follows the VM)")
	f.StringVar(&machine, "machine", "", "machine type: q35 (the default) or pc (i440fx)")
	f.StringVar(&cpuModel, "cpu-model", "", "libvirt CPU model, e.g. Nehalem (default: the cluster's vm.cpu_model)")
	f.StringVar(&userData, "cloud-init", "", "cloud-init user-data file (#cloud-config YAML or #! script) for a NoCloud seed")
	f.StringVar(&metaData, "meta-data", "", "cloud-init meta-data file (default: instance-id and local-hostname)")
	f.StringVar(&networkConfig, "network-config", "", "cloud-init network-config file")
	f.StringVar(&kernel, "kernel", "", "boot this kernel directly (absolute path of a regular file on every node)")
	f.StringVar(&initrd, "initrd", "", "initrd for --kernel (absolute path of a regular file on every node)")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line for --kernel")
	f.StringVar(&node, "node", "", "run on this node (its replicas are created first)")
	f.StringVar(&antiAffinity, "anti-affinity", "", "group whose VMs never share a node")
	f.Int32Var(&priority, "priority", 0, "restart priority (higher first)")
	f.BoolVar(&start, "start", false, "start the VM once created")
	f.BoolVar(&force, "force", false, "start even if N+1 admission control refuses")
	return cmd
}

func newVMListCmd(a *app) *cobra.Command {
	return listCmd(a, &cobra.Command{
		Use:   "list",
		Short: "List virtual machines",
		Example: `  tandem vm list
  tandem vm list --filter node=n1 --filter state=running
  tandem vm list --columns name --no-headers`,
	}, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ListVMsResponse, error) {
		return c.VM.List(ctx, &tandemv1.ListVMsRequest{})
	}, func(w io.Writer, resp *tandemv1.ListVMsResponse, lf *listFlags) error {
		t := &table{header: []string{"NAME", "NODE", "STATE", "DESIRED", "VCPUS", "MEMORY", "VOLUMES"}, empty: "(no VMs)"}
		for _, v := range resp.Vms {
			t.add(v.Name, dash(v.Node), dash(v.State), dash(v.Desired), fmt.Sprint(v.Vcpus), formatBytes(int64(v.MemoryMib)<<20), dash(strings.Join(v.Volumes, ",")))
		}
		if err := lf.write(w, t); err != nil {
			return err
		}
		for _, v := range resp.Vms {
			if v.Warning != "" && !lf.noHeaders {
				fmt.Fprintf(w, "warning: %s: %s\n", v.Name, v.Warning)
			}
		}
		return nil
	})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeVM(w io.Writer, v *tandemv1.VMInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", v.Name)
	fmt.Fprintf(tw, "Node:\t%s\n", dash(v.Node))
	fmt.Fprintf(tw, "State:\t%s (desired %s)\n", v.State, v.Desired)
	fmt.Fprintf(tw, "HA state:\t%s\n", dash(v.HaState))
	fmt.Fprintf(tw, "Priority:\t%d\n", v.Priority)
	if at := v.GetStartedAt(); at != nil {
		fmt.Fprintf(tw, "Up:\t%s (on %s since %s)\n", time.Since(at.AsTime()).Round(time.Second), dash(v.Node), formatTime(at))
	}
	fmt.Fprintf(tw, "vCPUs:\t%d\n", v.Vcpus)
	if v.Machine != "" {
		fmt.Fprintf(tw, "Machine:\t%s\n", machineName(v.Machine))
	}
	if v.CpuModel != "" {
		def := ""
		if v.CpuModelDefault {
			def = " (the cluster's vm.cpu_model)"
		}
		fmt.Fprintf(tw, "CPU model:\t%s%s\n", v.CpuModel, def)
	}
	fmt.Fprintf(tw, "Memory:\t%s\n", formatBytes(int64(v.MemoryMib)<<20))
	fmt.Fprintf(tw, "Volumes:\t%s\n", dash(strings.Join(v.Volumes, ", ")))
	for i, n := range v.Nics {
		fmt.Fprintf(tw, "NIC %d:\t%s %s %s\n", i, dash(n.Bridge), n.Mac, strings.Join(n.Ips, " "))
	}
	if v.HasCdrom {
		fmt.Fprintf(tw, "CD-ROM:\t%s\n", orEmptyDrive(v.Cdrom))
	}
	if v.CloudInit {
		fmt.Fprintf(tw, "Cloud-init:\tNoCloud seed attached (cidata)\n")
	}
	if len(v.Boot) > 0 {
		fmt.Fprintf(tw, "Boot order:\t%s\n", strings.Join(v.Boot, ", "))
	}
	if v.Firmware == "uefi" {
		fmt.Fprintf(tw, "Firmware:\tuefi (NVRAM sha256 %s)\n", dash(v.NvramSha256))
	}
	if v.Kernel != "" {
		fmt.Fprintf(tw, "Kernel:\t%s\n", v.Kernel)
	}
	if v.AntiAffinity != "" {
		fmt.Fprintf(tw, "Anti-affinity:\t%s\n", v.AntiAffinity)
	}
	if v.ConsoleLog != "" {
		fmt.Fprintf(tw, "Console log:\t%s\n", v.ConsoleLog)
	}
	writeVMAgent(tw, v)
	if err := tw.Flush(); err != nil {
		return err
	}
	if v.Warning != "" {
		fmt.Fprintf(w, "warning: %s\n", v.Warning)
	}
	return nil
}

// machineName spells out a machine type for vm show.
func machineName(m string) string {
	switch m {
	case "q35":
		return "q35 (PCIe)"
	case "pc":
		return "pc (i440fx)"
	}
	return m
}

func newVMShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a VM",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VMInfo, error) {
				return c.VM.Show(ctx, &tandemv1.VMRequest{Name: args[0]})
			}, writeVM)
		},
	}
}

func newVMStartCmd(a *app) *cobra.Command {
	var node string
	var force bool
	cmd := &cobra.Command{
		Use:   "start NAME [--node NODE]",
		Short: "Start a VM (its node becomes primary of its volumes first)",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VMInfo, error) {
				return c.VM.Start(ctx, &tandemv1.VMRequest{Name: args[0], Node: node, Force: force})
			}, writeVM)
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "start on this node (must hold UpToDate replicas)")
	cmd.Flags().BoolVar(&force, "force", false, "start even if N+1 admission control refuses")
	return cmd
}

func newVMStopCmd(a *app) *cobra.Command {
	var force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop NAME [--timeout 1m] [--force]",
		Short: "Shut a VM down (guest agent, else ACPI; destroyed after --timeout)",
		Long: `Shut a VM down as gently as possible: through its guest agent
(qemu-guest-agent) when one answers, else with the ACPI power button. A
guest still running after --timeout is destroyed. The answer says which of
the three brought it down (Stopped by: agent, acpi or destroy).`,
		Example: `  tandem vm stop web
  tandem vm stop web --timeout 5m
  tandem vm stop web --force`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, timeout+time.Minute, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VMInfo, error) {
				return c.VM.Stop(ctx, &tandemv1.VMRequest{Name: args[0], Force: force, TimeoutSeconds: uint32(timeout / time.Second)})
			}, writeVM)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "destroy at once (like pulling the plug)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long a clean shutdown may take before the VM is destroyed")
	cmd.Flags().DurationVar(&timeout, "shutdown-timeout", time.Minute, "")
	_ = cmd.Flags().MarkDeprecated("shutdown-timeout", "use --timeout")
	return cmd
}

func newVMDeleteCmd(a *app) *cobra.Command {
	var force, volumes bool
	cmd := &cobra.Command{
		Use:   "delete NAME [--volumes]",
		Short: "Delete a VM (its volumes are kept unless --volumes)",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !volumes {
				return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.DeleteVMResponse, error) {
					return c.VM.Delete(ctx, &tandemv1.VMRequest{Name: args[0], Force: force})
				}, func(w io.Writer, _ *tandemv1.DeleteVMResponse) error {
					_, err := fmt.Fprintf(w, "VM %s deleted; its volumes are kept (tandem volume delete, or vm delete --volumes)\n", args[0])
					return err
				})
			}
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.DeleteVMResponse, error) {
				info, err := c.VM.Show(ctx, &tandemv1.VMRequest{Name: args[0]})
				if err != nil {
					return nil, err
				}
				resp, err := c.VM.Delete(ctx, &tandemv1.VMRequest{Name: args[0], Force: force})
				if err != nil {
					return nil, err
				}
				for _, vol := range info.Volumes {
					if err := deleteDetachedVolume(ctx, c, vol); err != nil {
						return nil, fmt.Errorf("VM %s deleted, but not its volume %s (tandem volume delete %s): %w", args[0], vol, vol, err)
					}
				}
				return resp, nil
			}, func(w io.Writer, _ *tandemv1.DeleteVMResponse) error {
				_, err := fmt.Fprintf(w, "VM %s deleted with its volumes\n", args[0])
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "destroy a running VM first")
	cmd.Flags().BoolVar(&volumes, "volumes", false, "also delete the VM's volumes and their data on every node")
	return cmd
}

// deleteDetachedVolume deletes a volume whose VM was just undefined: its
// QEMU's NBD connection may take a moment to close, so "attached" is
// retried for a while.
func deleteDetachedVolume(ctx context.Context, c *adminclient.Client, name string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := c.Volume.Delete(ctx, &tandemv1.DeleteVolumeRequest{Name: name})
		if err == nil || status.Code(err) != codes.FailedPrecondition || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newVMMigrateCmd(a *app) *cobra.Command {
	var to string
	var downtime uint32
	var bandwidth uint64
	cmd := &cobra.Command{
		Use:   "migrate NAME [--to NODE]",
		Short: "Live-migrate a VM, handing its volumes over to the target",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := newProgressOutput(a.stderr, isTerminalWriter(a.stderr))
			defer out.finish()
			last, err := streamAdmin(a, cmd, migrateTimeout, func(ctx context.Context, c *adminclient.Client) (grpc.ServerStreamingClient[tandemv1.MigrateProgress], error) {
				return c.VM.Migrate(ctx, &tandemv1.MigrateVMRequest{Name: args[0], To: to, MaxDowntimeMs: downtime, BandwidthMibps: bandwidth})
			}, func(p *tandemv1.MigrateProgress) {
				switch p.Phase {
				case "migrating":
					if p.MemoryTotal > 0 {
						out.draw(fmt.Sprintf("%s -> %s: memory %d/%d MiB sent, %d MiB remaining", p.From, p.To, p.MemoryProcessed>>20, p.MemoryTotal>>20, p.MemoryRemaining>>20))
					}
				case "done":
				default:
					out.note(fmt.Sprintf("%s: %s", p.Phase, p.Message))
				}
			})
			if err != nil {
				return err
			}
			out.finish()
			if last == nil || last.Phase != "done" {
				return errors.New("the migration ended without a result; check 'tandem vm show'")
			}
			return a.print(last, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "VM %s migrated %s -> %s in %d ms, downtime %d ms\n", args[0], last.From, last.To, last.TotalMs, last.DowntimeMs)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "target node (default: the best node with UpToDate replicas)")
	cmd.Flags().Uint32Var(&downtime, "downtime-ms", 0, "QEMU's maximum downtime at switch-over (default QEMU's 300 ms)")
	cmd.Flags().Uint64Var(&bandwidth, "bandwidth-mibps", 0, "cap the migration stream in MiB/s (default unlimited)")
	return cmd
}

// orEmptyDrive names the image in a CD-ROM drive.
func orEmptyDrive(image string) string {
	if image == "" {
		return "(empty)"
	}
	return image
}
