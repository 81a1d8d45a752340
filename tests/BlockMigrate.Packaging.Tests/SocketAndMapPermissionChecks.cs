// What the shipped units, tmpfiles.d and examples promise about who reaches a VM's disk (issue 10,
// item 5): each VM's socket is handed to that VM's QEMU group only, maps live in a directory closed to
// everybody else, and nothing tells admins to put QEMU's user in group blockmigrate.  Plain content
// checks on the source tree (no package build); native/tests/test-socket-handover.sh runs the unit's
// ExecStartPost lines against a real nbdkit socket and checks who can connect.
using System.Text.RegularExpressions;

namespace BlockMigrate.Packaging.Tests;

[TestFixture]
public class SocketAndMapPermissionChecks
{
    private static string Read(string relative) => File.ReadAllText(Path.Combine(Tool.Top, relative));

    private static string[] Values(string unit, string key) =>
        Regex.Matches(unit, $@"(?m)^{key}=(.*)$").Select(m => m.Groups[1].Value.Trim()).ToArray();

    [Test]
    public void Shim_unit_hands_the_socket_to_the_VMs_QEMU_group_only()
    {
        var unit = Read("packaging/systemd/blockmigrate-shim@.service");
        Assert.Multiple(() =>
        {
            Assert.That(Values(unit, "Environment"), Does.Contain("QEMU_GROUP="), "QEMU_GROUP has an empty default");
            Assert.That(Values(unit, "ExecStartPre").Single(), Does.Contain("test -n \"$$QEMU_GROUP\"").And.Contain("exit 1"),
                "a disk without QEMU_GROUP does not start");
            Assert.That(Values(unit, "ExecStartPost"), Is.EqualTo(new[]
            {
                "+/bin/chgrp -- ${QEMU_GROUP} ${SOCKET}",
                "+/bin/chmod 0660 ${SOCKET}",
            }));
            Assert.That(Values(unit, "Group").Single(), Is.EqualTo("blockmigrate"));
            Assert.That(Values(unit, "UMask").Single(), Is.EqualTo("0077"));
            Assert.That(unit, Does.Not.Contain("members of group blockmigrate (add QEMU's user)"));
        });
    }

    [Test]
    public void Map_directory_is_closed_and_status_directory_is_roots()
    {
        var lines = Read("packaging/systemd/blockmigrate.tmpfiles").Split('\n')
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).Where(f => f.Length >= 5 && f[0] == "d")
            .ToDictionary(f => f[1], f => $"{f[2]} {f[3]} {f[4]}");
        Assert.Multiple(() =>
        {
            Assert.That(lines["/dev/shm/blockmigrate"], Is.EqualTo("0700 blockmigrate blockmigrate"));
            Assert.That(lines["/run/blockmigrate/migrations"], Is.EqualTo("0755 root root"));
            Assert.That(lines["/run/blockmigrate"], Does.Match("^07[0-5][0-5] "), "not writable by group or others");
        });
    }

    [Test]
    public void Example_and_docs_name_QEMU_GROUP_and_no_longer_add_QEMU_to_group_blockmigrate()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Read("packaging/config/disk.conf.example"), Does.Match(@"(?m)^QEMU_GROUP=\S+"));
            Assert.That(Read("docs/packaging.md"), Does.Not.Match(@"adduser \S+ blockmigrate"));
            Assert.That(Read("docs/packaging.md"), Does.Contain("QEMU_GROUP"));
            Assert.That(Read("packaging/man/blockmigrate.conf.5"), Does.Contain("QEMU_GROUP="));
            Assert.That(Read("packaging/man/blockmigrate.conf.5"), Does.Not.Contain("its user must be in group"));
        });
    }
}
