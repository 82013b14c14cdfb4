/**
 * What a fusedrt-engine config node owns: one Engine, loaded once for all
 * the nodes that use it, and the state they show. Kept free of Node-RED so
 * the config node stays a thin adapter.
 */
import * as os from 'os';
import * as path from 'path';
import { Engine } from '../../src/engine/engine';
import { errorCode } from '../../src/errors';
import type { EngineOptions } from '../../src/engine/types';
import { nodeError } from './messages';
import { planFor, resolveModelPath, type BuildSettings } from './model-source';

export type Truncation = 'truncate' | 'error';

export interface EngineSettings {
  /** A .plan file or a Hugging Face directory (see resolveModelPath). */
  model: string;
  build: BuildSettings;
  engine: EngineOptions;
  /** Node-RED's user directory: relative model paths and the plan cache live there. */
  userDir?: string;
}

export type EngineState =
  | { kind: 'loading'; buildFraction?: number }
  | { kind: 'ready' }
  | { kind: 'error'; error: Error };

/** A node that uses the engine and shows its state. */
export interface EngineUser {
  readonly id: string;
  engineStateChanged(state: EngineState): void;
}

/** Where HF directories are built to: `<userDir>/fusedrt-cache`, or the OS temp dir without a user dir. */
export function defaultCacheDir(userDir: string | undefined): string {
  return userDir ? path.join(userDir, 'fusedrt-cache') : path.join(os.tmpdir(), 'fusedrt-cache');
}

export class EngineHost {
  private readonly users = new Map<string, EngineUser>();
  private loading: Promise<Engine> | undefined;
  private current: EngineState = { kind: 'loading' };
  private closing: Promise<void> | undefined;

  /**
   * @param readSettings reads the config node's fields; called when loading
   *   starts, so a bad field becomes the engine's error state
   * @param truncation what happens to texts longer than the plan's max
   *   sequence length, for users that do not choose themselves
   * @param onLoadError reports a failed load (the config node logs it once;
   *   its users show it as their status)
   * @param onLoaded reports a loaded engine, once (the config node logs the
   *   backend and device it runs on)
   */
  constructor(private readonly readSettings: () => EngineSettings, readonly truncation: Truncation,
    private readonly onLoadError: (err: Error) => void, private readonly onLoaded: (engine: Engine) => void = () => undefined) {}

  /** Adds a user (loading the engine if nobody asked before) and tells it the current state. */
  register(user: EngineUser): void {
    this.users.set(user.id, user);
    user.engineStateChanged(this.current);
    void this.engine().catch(() => undefined);
  }

  deregister(user: EngineUser): void {
    this.users.delete(user.id);
  }

  /** The loaded engine; loading starts on the first call. Rejects with the load error, or E_DISPOSED once closed. */
  engine(): Promise<Engine> {
    if (this.closing) return Promise.reject(nodeError('E_DISPOSED', 'closed'));
    this.loading ??= this.load();
    return this.loading;
  }

  private async load(): Promise<Engine> {
    try {
      const settings = this.readSettings();
      const source = resolveModelPath(settings.model, settings.userDir);
      let shownPercent = -1;
      const plan = await planFor(source, settings.build, defaultCacheDir(settings.userDir), (fraction) => {
        // Builders report often; users see whole percents.
        const percent = Math.floor(fraction * 100);
        if (percent !== shownPercent) this.setState({ kind: 'loading', buildFraction: (shownPercent = percent) / 100 });
      });
      const engine = await Engine.load(plan, settings.engine);
      if (this.closing) {
        // Closed while loading: nobody will use it, and close() waits on this promise.
        await engine.dispose();
        throw nodeError('E_DISPOSED', 'closed');
      }
      this.setState({ kind: 'ready' });
      this.onLoaded(engine);
      return engine;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      if (errorCode(error) !== 'E_DISPOSED') {
        this.setState({ kind: 'error', error });
        this.onLoadError(error);
      }
      throw error;
    }
  }

  private setState(state: EngineState): void {
    this.current = state;
    for (const user of this.users.values()) user.engineStateChanged(state);
  }

  /** Waits for work in flight, then frees the engine. Later engine() calls reject. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.users.clear();
      const loading = this.loading;
      if (!loading) return;
      const engine = await loading.catch(() => undefined);
      await engine?.dispose();
    })();
    return this.closing;
  }
}
