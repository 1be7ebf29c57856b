package system

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("the documented defaults do not validate: %v", err)
	}
	if Defaults().cooldown() != time.Minute {
		t.Fatalf("default scaler cooldown %v, want one stats bucket", Defaults().cooldown())
	}
}

func TestValidateNamesEveryBadFlag(t *testing.T) {
	c := Defaults()
	c.DataDir = ""
	c.Nodes = 9
	c.Partitions = 100
	c.MaxImageBytes = 0
	c.Provisioner = "cloud"
	c.BlobStore = "ftp://x"
	c.Database = "mysql://x"
	c.Policy = "fifo"
	c.Heartbeat = 0
	c.StatsBuckets = 0
	c.ScalerCooldown = -time.Second
	c.LeaseTTL = -time.Second
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, flag := range []string{"--data", "--nodes", "--partitions", "--max-image-size", "--provisioner", "--blob-store",
		"--database", "--capacity/--policy", "--heartbeat", "--stats-buckets", "--scaler-cooldown", "--lease-ttl"} {
		if !strings.Contains(err.Error(), flag) {
			t.Errorf("error does not name %s:\n%v", flag, err)
		}
	}
}

func TestScalerCooldownOverride(t *testing.T) {
	c := Defaults()
	c.StatsBucket = 5 * time.Second
	if c.cooldown() != 5*time.Second {
		t.Fatalf("cooldown %v, want the bucket", c.cooldown())
	}
	c.ScalerCooldown = time.Second
	if c.cooldown() != time.Second {
		t.Fatalf("cooldown %v, want the flag", c.cooldown())
	}
}
