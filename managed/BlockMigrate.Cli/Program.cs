using System.CommandLine;
using BlockMigrate.Cli.Commands;

namespace BlockMigrate.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("BlockMigrate: live migration of virtual machines together with their local disks")
        {
            MapCommand.Create(),
            KeygenCommand.Create(),
            KeygenCommand.CreateFingerprint(),
            ReceiveCommand.Create(),
            MigrateCommand.Create(),
            VerifyCommand.Create(),
        };
        return CommandRunner.Invoke(root, args);
    }
}
