using System.CommandLine;
using System.Text.Json;
using BlockMigrate.Verify;

namespace BlockMigrate.Cli.Commands;

/// <summary><c>blockmigrate verify A B [--json]</c>: compare two images (files or NBD URIs); exit 1 when they differ.</summary>
public static class VerifyCommand
{
    public static Command Create()
    {
        var a = new Argument<string>("a") { Description = "an image file or NBD URI (nbd+unix:///?socket=...)" };
        var b = new Argument<string>("b") { Description = "the other image" };
        var json = new Option<bool>("--json") { Description = "print one JSON object" };
        var command = new Command("verify", "Compare two images byte for byte and list the extents that differ") { a, b, json };
        command.SetAction(r =>
        {
            using var sa = ImageSource.Open(r.GetValue(a)!);
            using var sb = ImageSource.Open(r.GetValue(b)!);
            var c = ImageComparer.Compare(sa, sb);
            if (r.GetValue(json)) WriteJson(c);
            else
            {
                if (c.Equal) Console.WriteLine($"identical: {c.SizeA} bytes");
                else
                {
                    Console.WriteLine($"DIFFERENT: {c.DifferentBytes} bytes in {c.Differences.Count} extents (sizes {c.SizeA} and {c.SizeB})");
                    foreach (var d in c.Differences.Take(50)) Console.WriteLine($"  {d.Offset}+{d.Length}");
                    if (c.Differences.Count > 50) Console.WriteLine($"  ... {c.Differences.Count - 50} more (use --json)");
                }
            }
            return c.Equal ? CommandRunner.Ok : CommandRunner.Failure;
        });
        return command;
    }

    private static void WriteJson(Comparison c)
    {
        using var stdout = Console.OpenStandardOutput();
        using (var w = new Utf8JsonWriter(stdout))
        {
            w.WriteStartObject();
            w.WriteBoolean("equal", c.Equal);
            w.WriteNumber("size_a", c.SizeA);
            w.WriteNumber("size_b", c.SizeB);
            w.WriteNumber("different_bytes", c.DifferentBytes);
            w.WriteStartArray("extents");
            foreach (var d in c.Differences)
            {
                w.WriteStartArray();
                w.WriteNumberValue(d.Offset);
                w.WriteNumberValue(d.Length);
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        stdout.WriteByte((byte)'\n');
    }
}
