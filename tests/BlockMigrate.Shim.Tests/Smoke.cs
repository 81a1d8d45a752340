namespace BlockMigrate.Shim.Tests; public class Smoke { [NUnit.Framework.Test] public void Runs() { NUnit.Framework.Assert.That(1, NUnit.Framework.Is.EqualTo(1)); } }
