using System.CommandLine;
using BlockMigrate.Cli.Commands;
using BlockMigrate.Cli.Logging;

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
            StatusCommand.Create(),
            AdoptCommand.Create(),
            AdoptCommand.CreateRelease(),
        };
        LogOptions.AddTo(root);
        return CommandRunner.Invoke(root, args);
    }
}
