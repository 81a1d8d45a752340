global using NUnit.Framework;
global using BlockMigrate.TestSupport;
