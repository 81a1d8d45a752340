using System.Globalization;
using BlockMigrate.Cli.Commands;
using CsCheck;

namespace BlockMigrate.Fuzz.Tests;

/// <summary>
/// The values of a config file (and of the same flags) go through small parsers: rates, byte rates,
/// durations, endpoints. Each gives a sane value (positive, finite, in range) or refuses with the
/// documented one-line error; never an OverflowException or a value that wrapped.
/// </summary>
[TestFixture]
public sealed class ConfigValueFuzzTests
{
    /// <summary>What the properties found, kept as fixed cases.</summary>
    [TestCase("NaN")]
    [TestCase("NaNGiB")]
    [TestCase("Infinity")]
    [TestCase("1e300G")]
    public void ByteRateOfNaNOrHugeIsRefused(string text) =>
        Assert.Throws<BlockMigrateException>(() => HypervisorCliOptions.ParseBytes(text));

    [TestCase("1e-30")]
    [TestCase("6.555E-30m")]
    [TestCase("1e300h")]
    [TestCase("Infinity")]
    public void DurationTooSmallOrHugeIsAnError(string text)
    {
        var errors = new List<string>();
        Assert.That(RedirectionCliOptions.ParseDuration(text, "tunnel-timeout", errors), Is.Null);
        Assert.That(errors, Has.Count.EqualTo(1));
    }

    [Test]
    public void RateOfFourHundredDigitsIsRefused() =>
        Assert.Throws<BlockMigrateException>(() => Rate.ParseBitsPerSecond(new string('9', 400)));

    /// <summary>Numbers and units with the edges that break arithmetic: huge, NaN, infinity, exponents, signs.</summary>
    private static readonly Gen<string> NumberTextGen =
        Gen.Select(
            Gen.Frequency(
                (3, Gen.Double.Select(d => d.ToString("R", CultureInfo.InvariantCulture))),
                (2, Gen.OneOf("0", "1", "-1", "1e300", "1e-300", "NaN", "Infinity", "-Infinity", "∞", "9223372036854775807",
                    "99999999999999999999999999999999", new string('9', 400), "1e-30", "0.0001", "1.5", ".5", "5.", "0x10", "1,000", " 7 ", "")),
                (2, Gen.Char["0123456789.eE+-"].Array[0, 24].Select(c => new string(c)))),
            Gen.OneOf("", "k", "K", "M", "G", "Gi", "GiB", "B/s", "mbit", "bps", "s", "m", "h", "d", "x", ":"),
            (n, u) => n + u);

    private static readonly Gen<string> AnyTextGen =
        Gen.Frequency((3, NumberTextGen), (1, Gen.String), (1, Gen.Char["[]:0123456789.abc*/ "].Array[0, 30].Select(c => new string(c))));

    [Test]
    public void RateIsFinitePositiveOrRefused() =>
        Fuzz.Run(AnyTextGen, text =>
        {
            double v = 0;
            if (!Fuzz.Refused<BlockMigrateException>(() => v = Rate.ParseBitsPerSecond(text)))
                Assert.That(double.IsFinite(v) && v >= 1000, $"rate '{text}' gave {v} bytes/s");
        });

    [Test]
    public void ByteRateIsPositiveOrRefused() =>
        Fuzz.Run(AnyTextGen, text =>
        {
            long v = 0;
            if (!Fuzz.Refused<BlockMigrateException>(() => v = HypervisorCliOptions.ParseBytes(text)))
                Assert.That(v, Is.GreaterThanOrEqualTo(1).And.LessThan(long.MaxValue), $"'{text}'");
        });

    [Test]
    public void DurationIsPositiveOrAnError() =>
        Fuzz.Run(AnyTextGen, text =>
        {
            var errors = new List<string>();
            var d = RedirectionCliOptions.ParseDuration(text, "tunnel-timeout", errors);
            Assert.That(d is { } t ? t >= TimeSpan.FromMilliseconds(1) && errors.Count == 0 : errors.Count == 1, $"'{text}' gave {d}");
        });

    [Test]
    public void EndpointHasAPortInRangeOrIsRefused() =>
        Fuzz.Run(Gen.Frequency((1, AnyTextGen),
                (2, Gen.Select(Gen.OneOf("10.0.0.1", "[::1]", "[fe80::1", "dst", "", "*", "::1", "[::]"), Gen.OneOf("", ":", ":0", ":65535", ":65536", ":-1", ":99999999999", ":7x"), (h, p) => h + p))),
            text =>
            {
                (string Host, int Port) v = default;
                if (!Fuzz.Refused<BlockMigrateException>(() => v = Endpoint.ParseHostPort(text, 7480)))
                    Assert.That(v.Port is >= 0 and <= 65535 && v.Host != null);
                Fuzz.Refused<BlockMigrateException>(() => Endpoint.ParseListen(text, 7480));
            });
}
