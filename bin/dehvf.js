#!/usr/bin/env node
// Entry for `npx dehvf`: registers tsx so the TypeScript sources run directly.
import { register } from "tsx/esm/api";

register();
await import("./dehvf.ts");
