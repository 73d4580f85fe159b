import tseslint from "typescript-eslint";
import importX from "eslint-plugin-import-x";

export default tseslint.config(
  { ignores: ["gen/**", "dist/**", "node_modules/**", ".local/**", "results/**", "bin/**", "eslint.config.js"] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { "import-x": importX },
    settings: { "import-x/resolver": { node: { extensions: [".ts", ".js"] } } },
    rules: {
      "@typescript-eslint/no-floating-promises": [
        "error",
        { allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["describe", "it", "test", "suite"] }] },
      ],
      "@typescript-eslint/no-misused-promises": "error",
      "import-x/no-cycle": ["error", { maxDepth: 10, ignoreExternal: true }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true, allowBoolean: true }],
      "no-restricted-properties": ["error", { object: "process", property: "exit", message: "Only the CLI entry point may exit." }],
    },
  },
  {
    files: ["cli/main.ts", "bench/**", "test/**"],
    rules: { "no-restricted-properties": "off", "@typescript-eslint/require-await": "off" },
  },
  {
    // process.env is read in one place: the config parser.
    files: ["**/*.ts"],
    ignores: ["common/config.ts", "cli/**", "test/**", "bench/**"],
    rules: {
      "no-restricted-syntax": ["error", { selector: "MemberExpression[object.name='process'][property.name='env']", message: "Read configuration through common/config.ts." }],
    },
  },
);
