package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// commandExamples are the Examples sections of commands that do not set
// their own, by command path. TestEveryCommandHasExamples keeps the list
// complete.
func commandExamples() map[string]string {
	return map[string]string{
		"cluster create": `  tandem cluster create prod`,
		"cluster join": `  tandem cluster join 10.0.0.1:7400 --token-file /root/join.token
  tandem cluster token -o json | jq -r .token | ssh n2 tandem cluster join 10.0.0.1:7400 --token -`,
		"cluster token": `  tandem cluster token
  tandem cluster token --ttl 24h`,
		"cluster expected-votes": `  tandem cluster expected-votes 1          # asks for a typed "yes"
  tandem cluster expected-votes 1 --yes-i-understand-split-brain`,
		"cluster config get": `  tandem cluster config get
  tandem cluster config get --defaults`,
		"cluster config set": `  tandem cluster config set resync.rate=200M
  tandem cluster config set ha.dead_timeout=5s ha.fence_timeout=30s
  tandem cluster config set resync.rate=     # back to the default`,
		"node remove": `  tandem node remove n3
  tandem node remove n3 --force --yes   # override the safety checks, no prompt`,
		"node maintenance": `  tandem node maintenance enable n2
  tandem node maintenance disable n2 --failback balanced`,
		"node fence-config": `  tandem node fence-config n1 --ipmi 10.0.1.11,admin,/root/bmc-n1.pw
  tandem node fence-config n2 --redfish https://10.0.1.12,admin,/root/bmc-n2.pw`,
		"node fence": `  tandem node fence n1
  tandem node fence n1 --confirm-off   # you checked that n1 is powered off`,
		"volume create": `  tandem volume create web-disk --size 20G
  tandem volume create db --size 100G --replicas 3
  tandem volume create scratch --size 1G --nodes n2,n3
  tandem volume create vm1 --size 20G --backend rbd --storage ceph1
  tandem volume create base --backend rbd --image debian-12.qcow2`,
		"volume resize":  `  tandem volume resize vm1 --size 40G`,
		"storage list":   `  tandem storage list`,
		"storage show":   `  tandem storage show ceph1`,
		"storage remove": `  tandem storage remove ceph1`,
		"volume show": `  tandem volume show web-disk
  tandem volume show web-disk -o json`,
		"volume delete":  `  tandem volume delete web-disk`,
		"volume promote": `  tandem volume promote web-disk --node n2`,
		"volume resync": `  tandem volume resync web-disk --wait
  tandem volume resync web-disk --discard n3 --wait   # rebuild n3's copy in full`,
		"vm create": `  tandem vm create web --memory 2G --disk 20G --nic br0 --start
  tandem vm create db --memory 4G --vcpus 2 --disk-volume db-disk --node n1
  tandem vm create appliance --memory 1G --image debian.qcow2 --start
  tandem vm create app1 --memory 1G --image debian-genericcloud.qcow2 --cloud-init user-data.yaml --start`,
		"vm show": `  tandem vm show web`,
		"vm start": `  tandem vm start web
  tandem vm start web --node n2`,
		"vm stop": `  tandem vm stop web
  tandem vm stop web --force   # pull the plug`,
		"vm delete": `  tandem vm delete web
  tandem vm delete web --force --volumes   # also its disks`,
		"vm migrate": `  tandem vm migrate web
  tandem vm migrate web --to n3`,
		"vm console": `  tandem vm console web
  tandem vm console web --log -f`,
		"ha status": `  tandem ha status
  tandem ha status -o json`,
		"ha arm":    `  tandem ha arm`,
		"ha disarm": `  tandem ha disarm   # e.g. before planned network work`,
		"version":   `  tandem version`,
	}
}

// addExamples fills in the Examples of commands that have none.
func addExamples(root *cobra.Command) {
	examples := commandExamples()
	walk(root, func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		if ex, ok := examples[path]; ok && c.Example == "" {
			c.Example = ex
		}
	})
}
