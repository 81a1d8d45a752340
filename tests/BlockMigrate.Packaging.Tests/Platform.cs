// The packaging checks run on Debian only (dpkg, systemd, chroot).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
