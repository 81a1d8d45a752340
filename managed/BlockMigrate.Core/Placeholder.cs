namespace BlockMigrate; public static class Placeholder {}
