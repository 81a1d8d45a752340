using BlockMigrate.Protocol;
using BlockMigrate.Receiver;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>A disk name from the wire can never make the receiver write outside its image directory.</summary>
[CancelAfter(60_000)]
public class DiskNameTests
{
    [TestCase("../evil")]
    [TestCase("a/b")]
    [TestCase("/etc/passwd")]
    [TestCase(".hidden")]
    [TestCase("x..y")]
    [TestCase("")]
    [TestCase("nul\0byte")]
    public async Task Name_with_a_path_in_it_is_refused_and_nothing_is_written(string name)
    {
        using var dir = new TempDir("engine");
        var before = Directory.GetFileSystemEntries(dir.Path, "*", SearchOption.AllDirectories).Length;
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            var answer = await source.HelloAsync(name);
            Assert.That(answer.Type, Is.EqualTo(FrameType.Error));
            Assert.That(System.Text.Encoding.UTF8.GetString(answer.Payload), Does.StartWith("refused disk name"));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.EqualTo(1));
        Assert.That(Directory.GetFiles(dir["dst"]), Is.Empty, "nothing created in the image directory");
        Assert.That(Directory.GetFileSystemEntries(dir.Path, "*", SearchOption.AllDirectories).Length, Is.EqualTo(before + 1), "only the image directory was created");
    }

    [Test]
    public async Task Symlink_planted_at_the_image_name_is_not_followed()
    {
        using var dir = new TempDir("engine");
        var outside = dir["outside.img"];
        await File.WriteAllTextAsync(outside, "precious");
        Directory.CreateDirectory(dir["dst"]);
        File.CreateSymbolicLink(Path.Combine(dir["dst"], "vda.img"), outside);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            Frame answer;
            try
            {
                answer = await source.HelloAsync("vda");
            }
            catch (ProtocolException e)
            {
                await Task.Delay(500);
                throw new AssertionException(e.Message + ": " + receiver.Process.Stderr);
            }
            Assert.That(answer.Type, Is.EqualTo(FrameType.Error), receiver.Process.Stderr);
            Assert.That(System.Text.Encoding.UTF8.GetString(answer.Payload), Does.Contain("symbolic link"));
        }
        Assert.That(await File.ReadAllTextAsync(outside), Is.EqualTo("precious"));
    }

    [TestCase("vda", ExpectedResult = true)]
    [TestCase("vm-01_disk.0", ExpectedResult = true)]
    [TestCase("..", ExpectedResult = false)]
    [TestCase("-rf", ExpectedResult = false)]
    [TestCase("a\\b", ExpectedResult = false)]
    public bool Name_rules(string name) => DiskName.IsValid(name);
}
