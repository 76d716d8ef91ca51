"""The mobility service: mobile members' tracking cards and dual management."""
